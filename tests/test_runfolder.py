import torch

from runner.run import run


def test_summary_records_the_thread_count_versions_and_determinism(make_cfg, tmp_path):
    before = torch.get_num_threads()
    try:
        summary = run(make_cfg("data=digits", "trainer.epochs=1", "trainer.num_threads=1"), tmp_path)
        assert summary["threads"] == 1
        assert summary["deterministic"] is False
        assert summary["versions"]["cuda"] == torch.version.cuda  # None on the CPU wheel
        assert "torch" in summary["versions"]
    finally:
        torch.set_num_threads(before)
        torch.use_deterministic_algorithms(False)
