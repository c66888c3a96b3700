"""`lorakit pipeline` end to end on the tiny model: a raw folder prepared, trained and benched into one run folder,
the bench page opened in headless Chromium; a failing stage stops with its reason and keeps what came before."""

from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from browser import needs_chromium, open_page
from conftest import run_cli, write_images

WORKFLOW = Path(__file__).resolve().parents[1] / ".." / "shared" / "testdata" / "comfyui-captures" / \
    "workflow_api_lora.json"
TINY = ['model.pretrained_model_name_or_path="tiny-sd1"', 'train.mixed_precision="no"', "data.resolution=64",
        "train.max_train_steps=3", "network.network_dim=4", "train.learning_rate=5e-2", "bench.steps=2",
        "checkpoint.at_end=false"]


def sets(*extra: str) -> list[str]:
    return [arg for value in (*TINY, *extra) for arg in ("--set", value)]


@pytest.fixture()
def root(tmp_path: Path) -> Path:
    raw = tmp_path / "datasets" / "raw" / "style" / "myset"
    write_images(raw, count=3)
    Image.new("RGB", (16, 16), "red").save(raw / "tiny.png")  # below --min-side: rejected
    return tmp_path


@pytest.mark.slow
@needs_chromium
def test_pipeline_raw_folder_to_bench_page(root: Path, monkeypatch, capsys) -> None:
    code, out = run_cli(monkeypatch, capsys, "pipeline", "--raw-set", "myset", "--root", root, "--resize",
                        "--min-side", "32", "--run-id", "r1", "--weights", "0,1", "--seeds", "1,2", *sets())
    assert code == 0, out
    run = root / "runs" / "r1"
    stages = json.loads((run / "pipeline.json").read_text())["stages"]
    assert [(s["name"], s["status"]) for s in stages] == [("prepare", "done"), ("train", "done"), ("bench", "done")]

    # prepare: the normalized set, and this run's copy of its log and rejected image
    normalized = root / "datasets" / "normalized" / "style" / "myset"
    assert sorted(p.name for p in normalized.glob("*.png")) == ["img0.png", "img1.png", "img2.png"]
    log = list(csv.DictReader(open(run / "preprocess_log.csv", encoding="utf-8")))
    assert (run / "preprocess_log.csv").read_bytes() == (normalized / "preprocess_log.csv").read_bytes()
    assert [r["source"] for r in log if r["status"] == "rejected"] == ["tiny.png"]
    assert [p.name for p in (run / "rejected").iterdir()] == ["tiny.png"]

    # train: the run trained on the normalized set, under the profile's name
    lora = run / "train" / "style_myset.safetensors"
    assert lora.is_file()
    snapshot = (run / "config.toml").read_text()
    assert f'train_data_dir = "{normalized.resolve().as_posix()}"' in snapshot
    losses = [r for r in csv.DictReader(open(run / "train" / "log.csv", encoding="utf-8")) if r["loss"]]

    # bench: the grids, metrics of every image against the training set, the page
    bench = run / "bench"
    plan = json.loads((bench / "plan.json").read_text())
    assert plan["prompts"] == [(normalized / "img0.txt").read_text().strip()]  # the first training caption
    rows = list(csv.DictReader(open(bench / "metrics.csv", encoding="utf-8")))
    assert [(r["seed"], r["weight"]) for r in rows] == [("1", "0"), ("1", "1"), ("2", "0"), ("2", "1")]
    assert all(r["hist_distance"] for r in rows)

    with open_page(bench / "index.html") as page:
        images = page.eval_on_selector_all("img", "els => els.map(e => [e.getAttribute('src'), e.naturalWidth])")
        grid = Image.open(bench / "grid_seed1.png").convert("RGB")
        assert ["grid_seed1.png", grid.width] in [list(i) for i in images]
        shown = np.asarray(Image.open(io.BytesIO(page.locator('img[src="grid_seed1.png"]').screenshot(
            scale="css", animations="disabled"))).convert("RGB"))
        expected = np.asarray(grid)
        assert any(np.array_equal(shown[dy:dy + grid.height, :grid.width], expected)
                   for dy in range(shown.shape[0] - grid.height + 1))  # the grid, pixel for pixel
        points = page.eval_on_selector("svg.loss polyline", "e => e.getAttribute('points').trim().split(/\\s+/)")
        assert len(points) == len(losses)  # the training loss curve: one point per logged loss
        curve = np.asarray(Image.open(io.BytesIO(page.locator("svg.loss").screenshot())).convert("RGB")).astype(int)
        assert ((curve[..., 0] - curve[..., 1] > 60) & (curve[..., 0] > 150)).sum() > 50  # its red stroke is drawn
        page.screenshot(path=str(run / "bench-page.png"), full_page=True)
    assert Image.open(run / "bench-page.png").height > grid.height

    # a second bench of the same run: --skip-train writes bench-2 beside it, nothing overwritten
    code, out = run_cli(monkeypatch, capsys, "pipeline", "--raw-set", "myset", "--root", root, "--run-id", "r1",
                        "--skip-train", "--weights", "0,0.5", "--seeds", "3", "--positive", "a red square")
    assert code == 0, out
    plan2 = json.loads((run / "bench-2" / "plan.json").read_text())
    assert plan2["prompts"] == ["a red square"] and plan2["weights"] == [0, 0.5] and plan2["steps"] == 2
    assert json.loads((bench / "plan.json").read_text()) == plan


def test_a_failing_stage_stops_and_keeps_what_came_before(root: Path, monkeypatch, capsys) -> None:
    code, out = run_cli(monkeypatch, capsys, "pipeline", "--raw-set", "myset", "--root", root, "--resize",
                        "--min-side", "32", "--run-id", "r2", *sets("faults.nan_at_step=1", "faults.nan_steps=3",
                                                                    "train.max_nonfinite_steps=1"))
    assert code != 0
    run = root / "runs" / "r2"
    stages = json.loads((run / "pipeline.json").read_text())["stages"]
    assert [(s["name"], s["status"]) for s in stages] == [("prepare", "done"), ("train", "failed")]
    assert (run / "preprocess_log.csv").is_file() and not (run / "bench").exists()
    assert (root / "datasets" / "normalized" / "style" / "myset" / "img0.png").is_file()


def test_checks_before_anything_is_written(root: Path, monkeypatch, capsys) -> None:
    # no normalized set and no --resize
    code, out = run_cli(monkeypatch, capsys, "pipeline", "--raw-set", "myset", "--root", root, *sets())
    assert code != 0 and "no normalized set" in out and "--resize" in out
    # a ComfyUI bench whose workflow is missing: refused before preparing or training
    code, out = run_cli(monkeypatch, capsys, "pipeline", "--raw-set", "myset", "--root", root, "--resize",
                        "--backend", "comfyui", "--workflow", root / "nope.json", *sets())
    assert code != 0 and "bench.workflow" in " ".join(out.split())
    # a raw set that is a path, and --skip-train without a run
    code, out = run_cli(monkeypatch, capsys, "pipeline", "--raw-set", "../x", "--root", root)
    assert code != 0 and "a folder name under datasets/raw/style/" in " ".join(out.split())
    code, out = run_cli(monkeypatch, capsys, "pipeline", "--raw-set", "myset", "--root", root, "--skip-train")
    assert code != 0 and "--run-id" in out
    # a run id that is a path would write outside runs/
    code, out = run_cli(monkeypatch, capsys, "pipeline", "--raw-set", "myset", "--root", root, "--resize",
                        "--run-id", "../escaped", "--skip-bench", *sets())
    assert code != 0 and "a plain folder name under runs/" in " ".join(out.split())
    # ComfyUI: every run of a set makes a file of the same name, so the pipeline must install it
    if WORKFLOW.is_file():  # ../shared's captures
        code, out = run_cli(monkeypatch, capsys, "pipeline", "--raw-set", "myset", "--root", root, "--resize",
                            "--backend", "comfyui", "--workflow", WORKFLOW, *sets())
        assert code != 0 and "bench.lora_install_dir" in " ".join(out.split())
    # no prompt for the bench anywhere (no captions, no [sample] prompts, no --positive): found before training
    for caption in (root / "datasets" / "raw" / "style" / "myset").glob("*.txt"):
        caption.unlink()
    code, out = run_cli(monkeypatch, capsys, "pipeline", "--raw-set", "myset", "--root", root, "--resize",
                        *sets())
    assert code != 0 and "bench.prompts is empty" in " ".join(out.split())
    assert not (root / "runs").exists() and not (root / "datasets" / "normalized").exists()
    assert not (root / "escaped").exists()


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() != 0, reason="chown needs root")
def test_fix_owner_gives_the_folders_to_the_sudo_user(tmp_path: Path, monkeypatch) -> None:
    from lorakit.pipeline import fix_owner

    mine, other = tmp_path / "datasets", tmp_path / "elsewhere"
    (mine / "a").mkdir(parents=True)
    (mine / "a" / "f.txt").write_text("x")
    other.mkdir()
    monkeypatch.setenv("SUDO_UID", "65534")
    monkeypatch.setenv("SUDO_GID", "65533")
    runs = tmp_path / "runs"
    (runs / "someone_elses_run").mkdir(parents=True)
    assert "4 files and folders given to uid 65534, gid 65533" in fix_owner([mine, tmp_path / "missing"], [runs])
    assert {(p.stat().st_uid, p.stat().st_gid) for p in [mine, *mine.rglob("*"), runs]} == {(65534, 65533)}
    assert other.stat().st_uid == 0 and (runs / "someone_elses_run").stat().st_uid == 0  # only what was named
    monkeypatch.delenv("SUDO_UID")
    assert "no SUDO_UID" in fix_owner([mine])
