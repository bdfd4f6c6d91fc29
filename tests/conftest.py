import os
import tempfile
from pathlib import Path

import pytest

# Generated datasets are cached here, shared by the tests and the `train` subprocesses they start.
os.environ.setdefault("RUNNER_DATA_DIR", str(Path(tempfile.gettempdir()) / "runner-test-data"))

CONF = Path(__file__).resolve().parents[1] / "conf"
# Small enough that a run takes about a second on 2 cores (works with every data option).
SMALL = ["trainer.epochs=2", "trainer.batch_size=64"]


@pytest.fixture
def make_cfg():
    """Compose conf/train.yaml as `train` would, with SMALL and the given overrides."""
    from hydra import compose, initialize_config_module

    import runner.train  # noqa: F401  (registers the schemas)

    def make(*overrides, small=True):
        with initialize_config_module("runner.conf", version_base="1.3"):
            return compose("train", overrides=[*(SMALL if small else []), *overrides])

    return make
