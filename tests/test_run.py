import json
import sys

import torch

from runner.run import run
from runner.runfolder import save_atomic, write_atomic


def test_run_folder_contract(make_cfg, tmp_path):
    summary = run(make_cfg("data=digits"), tmp_path)
    on_disk = json.loads((tmp_path / "summary.json").read_text())
    assert on_disk == summary
    for key in ["status", "stop_reason", "epochs", "steps", "best_epoch", "best_value", "train_loss", "train_acc",
                "val_loss", "val_acc", "test_loss", "test_acc", "gap_loss", "gap_acc", "wall_seconds", "params",
                "device", "seed", "versions"]:
        assert key in summary, key
    assert summary["gap_acc"] == summary["train_acc"] - summary["test_acc"]
    assert summary["versions"]["torch"] == torch.__version__
    model = torch.load(tmp_path / "best.pt", weights_only=True)
    assert summary["params"] == sum(v.numel() for k, v in model.items())
    last = torch.load(tmp_path / "last.pt", weights_only=True)
    assert set(last) >= {"model", "optimizer", "step"} and last["step"] == summary["steps"]
    assert not list(tmp_path.glob(".*.tmp"))  # no temporary files left behind


def test_atomic_writes_replace_whole_files(tmp_path):
    path = tmp_path / "f.json"
    write_atomic(path, "old")
    write_atomic(path, "new")
    assert path.read_text() == "new" and [p.name for p in tmp_path.iterdir()] == ["f.json"]
    save_atomic({"w": torch.ones(2)}, tmp_path / "c.pt")
    assert torch.equal(torch.load(tmp_path / "c.pt", weights_only=True)["w"], torch.ones(2))


def test_device_auto_falls_back_to_cpu():
    from runner.run import resolve_device

    expected = "cuda" if torch.cuda.is_available() else "cpu"
    if sys.platform == "darwin" and torch.backends.mps.is_available():
        expected = "mps"
    assert resolve_device("auto").type == expected
    assert resolve_device("cpu").type == "cpu"


class Payload:
    """Anything unpickling would construct (and could run code for)."""


def test_checkpoint_with_pickled_objects_is_refused(tmp_path):
    import pytest

    from runner.runfolder import CheckpointError, load_checkpoint

    torch.save({"model": {"w": torch.ones(1)}, "extra": Payload()}, tmp_path / "last.pt")
    with pytest.raises(CheckpointError, match="refused to load"):
        load_checkpoint(tmp_path / "last.pt")


def test_resume_refuses_a_tampered_checkpoint(make_cfg, tmp_path):
    import pytest

    from runner.runfolder import CheckpointError

    cfg = make_cfg("data=digits")
    run(cfg, tmp_path)
    state = torch.load(tmp_path / "last.pt", weights_only=True)
    torch.save({**state, "extra": Payload()}, tmp_path / "last.pt")
    with pytest.raises(CheckpointError):
        run(cfg, tmp_path, resume=True)


def test_previous_outcome(make_cfg, tmp_path):
    import pytest

    from runner.check import ConfigError
    from runner.runfolder import previous_outcome

    cfg = make_cfg("data=digits")
    assert previous_outcome(tmp_path, cfg) == ("fresh", None)
    summary = run(cfg, tmp_path)
    assert previous_outcome(tmp_path, cfg) == ("skip", json.loads((tmp_path / "summary.json").read_text()))
    assert summary["config_hash"] == previous_outcome(tmp_path, cfg)[1]["config_hash"]
    with pytest.raises(ConfigError, match="holds a finished run of another config"):
        previous_outcome(tmp_path, make_cfg("data=digits", "trainer.seed=1"))
