"""run_files: run folders, log.csv columns, the final LoRA and samples, checked against files written here.

The layout follows the engine: CsvLog (src/lorakit/engine/events.py) writes `step,epoch,loss,lr,val_loss,time`
with validation rows carrying only step, val_loss and time; the trainer names intermediate saves
`<output_name>-step<N>` (engine/trainer.py `_save`); samples are `step<N:08d>_<i:02d>.png` plus
`contact_sheet.png` (engine/samples.py SampleRenderer.render).
"""

from __future__ import annotations

import os
from pathlib import Path

from lorakit.ui import run_files

LOG = """step,epoch,loss,lr,val_loss,time
1,1,0.500000,0.0001,,2025-01-01T00:00:01.000Z
2,1,0.400000,9e-05,,2025-01-01T00:00:02.000Z
2,,,,0.450000,2025-01-01T00:00:02.500Z
3,2,0.300000,8e-05,,2025-01-01T00:00:03.000Z
"""


def make_run(root: Path, name: str, mtime: float, log: str | None = LOG) -> Path:
    run = root / name
    (run / "train").mkdir(parents=True)
    (run / "config.toml").write_text("[train]\nlearning_rate = 0.0001\n", encoding="utf-8")
    if log is not None:
        (run / "train" / "log.csv").write_text(log, encoding="utf-8")
        os.utime(run / "train" / "log.csv", (mtime, mtime))
    os.utime(run, (mtime, mtime))
    return run


def test_list_runs_newest_first_across_folders(tmp_path: Path) -> None:
    a, b = tmp_path / "runs", tmp_path / "other"
    old = make_run(a, "20250101_000000", 1_000_000)
    new = make_run(b, "20250102_000000", 3_000_000)
    mid = make_run(a, "named", 2_000_000, log=None)
    (a / "not_a_run").mkdir()  # neither config.toml nor train/
    (a / "stray.txt").write_text("x")
    runs = run_files.list_runs([a, b, a, tmp_path / "missing"])
    assert [r.path for r in runs] == [new, mid, old]
    assert runs[0].label == "other/20250102_000000"
    assert run_files.list_runs([new]) == [runs[0]]  # a run folder given directly


def test_newest_log_time_counts(tmp_path: Path) -> None:
    first = make_run(tmp_path, "a", 1_000_000)
    second = make_run(tmp_path, "b", 2_000_000)
    os.utime(first / "train" / "log.csv", (5_000_000, 5_000_000))  # still logging: newer than b
    assert [r.path for r in run_files.list_runs([tmp_path])] == [first, second]
    assert run_files.latest_log([tmp_path]) == first / "train" / "log.csv"


def test_read_log_columns(tmp_path: Path) -> None:
    run = make_run(tmp_path, "r", 1_000_000)
    log = run_files.read_log(run / "train" / "log.csv")
    assert log["step"] == [1, 2, 2, 3]
    assert log["epoch"] == [1.0, 1.0, None, 2.0]
    assert log["loss"] == [0.5, 0.4, None, 0.3]
    assert log["lr"] == [1e-4, 9e-5, None, 8e-5]
    assert log["val_loss"] == [None, None, 0.45, None]
    assert log["time"][2] == "2025-01-01T00:00:02.500Z"
    rows = run_files.series(log, ("loss", "val_loss"))
    assert rows == [{"step": 1, "value": 0.5, "series": "loss"}, {"step": 2, "value": 0.4, "series": "loss"},
                    {"step": 3, "value": 0.3, "series": "loss"}, {"step": 2, "value": 0.45, "series": "val_loss"}]


def test_read_log_missing_and_bad_cells(tmp_path: Path) -> None:
    assert run_files.read_log(tmp_path / "nope.csv") == {c: [] for c in run_files.LOG_COLUMNS}
    path = tmp_path / "log.csv"
    path.write_text("step,epoch,loss,lr,val_loss,time\n,1,0.1,1,,t\n4,1,nan,oops,,t\n", encoding="utf-8")
    log = run_files.read_log(path)
    assert log["step"] == [4] and log["loss"] == [None] and log["lr"] == [None]


def test_samples_in_render_order_sheet_last(tmp_path: Path) -> None:
    run = make_run(tmp_path, "r", 1_000_000)
    assert run_files.samples(run) == []
    folder = run / "samples"
    folder.mkdir()
    names = ["step00000010_01.png", "contact_sheet.png", "step00000000_00.png", "step00000010_00.png", "note.txt"]
    for name in names:
        (folder / name).write_bytes(b"0")
    assert [p.name for p in run_files.samples(run)] == [
        "step00000000_00.png", "step00000010_00.png", "step00000010_01.png", "contact_sheet.png"]


def test_bench_page_and_config(tmp_path: Path) -> None:
    run = make_run(tmp_path, "r", 1_000_000)
    assert run_files.bench_page(run) is None
    (run / "bench").mkdir()
    (run / "bench" / "index.html").write_text("<html></html>")
    assert run_files.bench_page(run) == run / "bench" / "index.html"
    assert run_files.config_text(run) == "[train]\nlearning_rate = 0.0001\n"
    assert run_files.config_text(tmp_path / "none") == ""
