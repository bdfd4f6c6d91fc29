#!/usr/bin/env bash
# A one-node SLURM cluster on localhost for tests/test_slurm.py: munge, MariaDB, slurmdbd (without
# accounting submitit hangs when a job crashes), slurmctld and slurmd, all as root, state under $SLURM_DIR.
#   tests/slurm/cluster.sh install   # Debian packages (once, needs root)
#   tests/slurm/cluster.sh start     # about 15 s
#   tests/slurm/cluster.sh stop
set -euo pipefail
SLURM_DIR=${SLURM_DIR:-/tmp/runner-slurm}
HOST=$(hostname -s)
CPUS=$(nproc)
MEM=$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 - 1024 ))

install() {
  apt-get install -y -q slurmd slurmctld slurmdbd munge mariadb-server
}

start() {
  mkdir -p "$SLURM_DIR"/{state,spool,log} /run/munge /var/run/mysqld
  chown munge:munge /run/munge 2>/dev/null || true
  chown mysql:mysql /var/run/mysqld 2>/dev/null || true
  [ -s /etc/munge/munge.key ] || mungekey --create
  pgrep -x munged >/dev/null || runuser -u munge -- munged --force
  if ! pgrep -x mariadbd >/dev/null && ! pgrep -x mysqld >/dev/null; then
    (mysqld_safe >"$SLURM_DIR/log/mysql.log" 2>&1 &)
    for _ in $(seq 60); do mysqladmin ping >/dev/null 2>&1 && break; sleep 0.5; done
  fi
  mysql -e "CREATE DATABASE IF NOT EXISTS slurm_acct_db; CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY 'slurm';
            GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost'; FLUSH PRIVILEGES;"
  cat >/etc/slurm/slurmdbd.conf <<CONF
AuthType=auth/munge
DbdHost=localhost
SlurmUser=root
StorageType=accounting_storage/mysql
StorageHost=localhost
StorageUser=slurm
StoragePass=slurm
StorageLoc=slurm_acct_db
LogFile=$SLURM_DIR/log/slurmdbd.log
PidFile=$SLURM_DIR/slurmdbd.pid
CONF
  chmod 600 /etc/slurm/slurmdbd.conf
  cat >/etc/slurm/slurm.conf <<CONF
ClusterName=runner
SlurmctldHost=$HOST
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=$SLURM_DIR/state
SlurmdSpoolDir=$SLURM_DIR/spool
SlurmctldPidFile=$SLURM_DIR/slurmctld.pid
SlurmdPidFile=$SLURM_DIR/slurmd.pid
SlurmctldLogFile=$SLURM_DIR/log/slurmctld.log
SlurmdLogFile=$SLURM_DIR/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
MpiDefault=none
NodeName=$HOST CPUs=$CPUS RealMemory=$MEM State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
CONF
  pgrep -x slurmdbd >/dev/null || slurmdbd
  for _ in $(seq 40); do sacctmgr -i show cluster >/dev/null 2>&1 && break; sleep 0.5; done
  sacctmgr -i add cluster runner >/dev/null 2>&1 || true
  pgrep -x slurmctld >/dev/null || slurmctld
  pgrep -x slurmd >/dev/null || slurmd
  for _ in $(seq 60); do sinfo -h -o %T 2>/dev/null | grep -qx idle && break; sleep 0.5; done
  sinfo
}

stop() {
  for d in slurmd slurmctld slurmdbd; do pkill -x "$d" || true; done
  mysqladmin shutdown 2>/dev/null || true
  pkill -x munged || true
}

"${1:?usage: $0 install|start|stop}"
