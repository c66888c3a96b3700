"""`lorakit bench --backend comfyui` against the stand-in ComfyUI (real recorded shapes): the workflow patched per
image, the LoRA copied under a content name, progress followed on /ws, images downloaded with /view, and every
failure ComfyUI reports turned into a clear error. Expected values come from the captured workflow file and the
stand-in's own image bytes, not from lorakit's output."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import socket
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bench.comfy_standin import CAPTURES, ComfyStandIn, capture
from conftest import run_cli

pytestmark = pytest.mark.skipif(not CAPTURES.is_dir(), reason="ComfyUI captures not present")
WORKFLOW = CAPTURES / "workflow_api_lora.json"


def colour_of(workflow: dict, index: int) -> tuple[int, int, int]:
    """The stand-in's image: red from the LoRA strength, green from the seed, blue from the batch index."""
    lora = next(n for n in workflow.values() if n["class_type"] == "LoraLoader")["inputs"]
    seed = next(n for n in workflow.values() if n["class_type"] == "KSampler")["inputs"]["seed"]
    return int(round(200 * lora["strength_model"])), seed % 256, 40 * index


def png(workflow: dict, index: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (64, 64), colour_of(workflow, index)).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture()
def lora(tmp_path: Path) -> Path:
    from safetensors.torch import save_file
    import torch

    path = tmp_path / "run1" / "train" / "mystyle.safetensors"
    path.parent.mkdir(parents=True)
    save_file({"lora_unet_x.lora_down.weight": torch.ones(2, 2)}, str(path),
              metadata={"ss_output_name": "mystyle", "ss_training_finished_at": "1795325208"})
    return path


def test_bench_through_comfyui(tmp_path: Path, lora: Path, monkeypatch, capsys) -> None:
    loras = tmp_path / "comfy" / "models" / "loras"
    loras.mkdir(parents=True)
    (loras / "someone_elses.safetensors").write_bytes(b"untouched")
    with ComfyStandIn(png, loras_dir=loras) as comfy:
        code, out = run_cli(monkeypatch, capsys, "bench", "--lora", lora, "--backend", "comfyui", "--comfy-url",
                            comfy.url, "--workflow", WORKFLOW, "--lora-install-dir", loras, "--weights", "0,0.5,1",
                            "--seeds", "5,6")
        sent = [p["prompt"] for p in comfy.prompts]
        client_ids = {p["client_id"] for p in comfy.prompts}
    assert code == 0, out

    # the LoRA sits in ComfyUI's folder under a name from its content; nothing else there changed
    name = f"lorakit-mystyle-{hashlib.sha256(lora.read_bytes()).hexdigest()[:12]}.safetensors"
    assert sorted(p.name for p in loras.iterdir()) == sorted([name, "someone_elses.safetensors"])
    assert (loras / name).read_bytes() == lora.read_bytes()
    assert (loras / "someone_elses.safetensors").read_bytes() == b"untouched"

    # one prompt per (seed, weight), each the captured workflow with exactly these inputs changed
    original = json.loads(WORKFLOW.read_text())
    assert len(sent) == 6 and len(client_ids) == 1
    for workflow, (seed, weight) in zip(sent, [(s, w) for s in (5, 6) for w in (0.0, 0.5, 1.0)]):
        expected = json.loads(json.dumps(original))
        expected["2"]["inputs"].update(lora_name=name, strength_model=weight, strength_clip=weight)
        expected["6"]["inputs"]["seed"] = seed
        expected["8"]["inputs"]["filename_prefix"] = f"lorakit/run1/bench/w{weight:.2f}/seed{seed}_p00"
        assert workflow == expected  # prompts, sampler, steps, cfg and size: the workflow's own

    bench = lora.parent.parent / "bench"
    plan = json.loads((bench / "plan.json").read_text())
    assert (plan["backend"], plan["model"], plan["prompts"], plan["negative_prompt"]) == (
        "comfyui", "sd15mini.safetensors", ["a photo of sks"], "blurry")
    assert (plan["sampler"], plan["steps"], plan["cfg"], plan["width"]) == ("euler", 2, 7.0, 64)
    assert json.loads((bench / "workflow.json").read_text()) == original
    for seed in (5, 6):
        for weight in (0, 0.5, 1):
            image = np.asarray(Image.open(bench / "images" / f"p00_s{seed}_w{weight:g}.png"))
            assert tuple(image[0, 0]) == (round(200 * weight), seed, 0)
    rows = list(csv.DictReader(open(bench / "metrics.csv", encoding="utf-8")))
    for row in rows:  # solid images: the mean abs difference is the red difference over 3 channels
        assert float(row["mean_abs_diff"]) == pytest.approx(200 * float(row["weight"]) / 3, abs=0.34)
    assert (bench / "grid_seed5.png").is_file() and "summary" in out


def test_batches_previews_and_a_lora_comfyui_already_has(tmp_path: Path, lora: Path, monkeypatch, capsys) -> None:
    """Batch size 2 gives two images per cell, binary preview frames on the socket are skipped, and without
    --lora-install-dir the LoRA's own name must already be in ComfyUI's list."""
    loras = tmp_path / "loras"
    loras.mkdir()
    (loras / lora.name).write_bytes(lora.read_bytes())
    with ComfyStandIn(png, loras_dir=loras) as comfy:
        comfy.template = "ws_success_with_previews_latent2rgb.json"
        code, out = run_cli(monkeypatch, capsys, "bench", "--lora", lora, "--backend", "comfyui", "--comfy-url",
                            comfy.url, "--workflow", WORKFLOW, "--weights", "0,1", "--seeds", "3", "--batch-size", "2",
                            "--prompt", "mine", "--steps", "4", "--out", tmp_path / "b")
        sent = [p["prompt"] for p in comfy.prompts]
    assert code == 0, out
    assert [w["2"]["inputs"]["lora_name"] for w in sent] == [lora.name] * 2
    assert all(w["5"]["inputs"]["batch_size"] == 2 and w["6"]["inputs"]["steps"] == 4 for w in sent)
    assert all(w["3"]["inputs"]["text"] == "mine" for w in sent)
    names = sorted(p.name for p in (tmp_path / "b" / "images").iterdir())
    assert names == ["p00_s3_w0.png", "p00_s3_w0_b1.png", "p00_s3_w1.png", "p00_s3_w1_b1.png"]
    assert tuple(np.asarray(Image.open(tmp_path / "b" / "images" / "p00_s3_w1_b1.png"))[0, 0]) == (200, 3, 40)
    rows = list(csv.DictReader(open(tmp_path / "b" / "metrics.csv", encoding="utf-8")))
    assert [(r["weight"], r["batch"]) for r in rows] == [("0", "0"), ("0", "1"), ("1", "0"), ("1", "1")]
    assert float(rows[3]["mean_abs_diff"]) == pytest.approx(200 / 3, abs=0.34)  # against the base's batch 1


def test_lora_comfyui_does_not_list(tmp_path: Path, lora: Path, monkeypatch, capsys) -> None:
    with ComfyStandIn(png) as comfy:  # lists the captured /models/loras body
        code, out = run_cli(monkeypatch, capsys, "bench", "--lora", lora, "--backend", "comfyui", "--comfy-url",
                            comfy.url, "--workflow", WORKFLOW, "--out", tmp_path / "b")
    assert code != 0 and "does not list LoRA 'mystyle.safetensors' (6 LoRAs known)" in out
    assert "--lora-install-dir" in out and not comfy.prompts


def test_execution_error_and_refused_prompt_are_reported(tmp_path: Path, lora: Path, monkeypatch, capsys) -> None:
    loras = tmp_path / "loras"
    loras.mkdir()
    with ComfyStandIn(png, loras_dir=loras) as comfy:
        comfy.fail_with = capture("ws_execution_error_ckpt.json")
        code, out = run_cli(monkeypatch, capsys, "bench", "--lora", lora, "--backend", "comfyui", "--comfy-url",
                            comfy.url, "--workflow", WORKFLOW, "--lora-install-dir", loras, "--out", tmp_path / "b1")
        assert code != 0 and "ComfyUI failed in node 1 (CheckpointLoaderSimple): RuntimeError" in out
        comfy.fail_with, comfy.reject = None, capture("err_value_bigger_than_max.json")
        code, out = run_cli(monkeypatch, capsys, "bench", "--lora", lora, "--backend", "comfyui", "--comfy-url",
                            comfy.url, "--workflow", WORKFLOW, "--lora-install-dir", loras, "--out", tmp_path / "b2")
    node, error = next(iter(comfy.reject["body"]["node_errors"].items()))
    assert code != 0 and f"node {node} ({error['class_type']})" in " ".join(out.split())


def test_unreachable_comfyui_leaves_nothing(tmp_path: Path, lora: Path, monkeypatch, capsys) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    code, out = run_cli(monkeypatch, capsys, "bench", "--lora", lora, "--backend", "comfyui", "--comfy-url",
                        f"http://127.0.0.1:{port}", "--workflow", WORKFLOW, "--out", tmp_path / "b")
    assert code != 0 and f"ComfyUI is not reachable at http://127.0.0.1:{port}" in out
    assert not (tmp_path / "b").exists()


def test_ui_format_workflow_is_refused_before_anything(tmp_path: Path, lora: Path, monkeypatch, capsys) -> None:
    code, out = run_cli(monkeypatch, capsys, "bench", "--lora", lora, "--backend", "comfyui", "--workflow",
                        CAPTURES / "workflow_ui_format.json", "--out", tmp_path / "b")
    assert code != 0 and "UI format" in out and "Export Workflow (API)" in out
    assert not (tmp_path / "b").exists()


def test_an_older_file_of_the_same_name_is_not_benched(tmp_path: Path, lora: Path, monkeypatch, capsys) -> None:
    """Without --lora-install-dir the LoRA ComfyUI lists under this name must be this file (its metadata, read
    through /view_metadata/loras), not an earlier run's."""
    from safetensors.torch import save_file
    import torch

    loras = tmp_path / "loras"
    loras.mkdir()
    save_file({"lora_unet_x.lora_down.weight": torch.ones(2, 2)}, str(loras / lora.name),
              metadata={"ss_output_name": "mystyle", "ss_training_finished_at": "1700000000"})
    with ComfyStandIn(png, loras_dir=loras) as comfy:
        code, out = run_cli(monkeypatch, capsys, "bench", "--lora", lora, "--backend", "comfyui", "--comfy-url",
                            comfy.url, "--workflow", WORKFLOW, "--out", tmp_path / "b")
    assert code != 0 and "ComfyUI's LoRA 'mystyle.safetensors' is not" in " ".join(out.split())
    assert not comfy.prompts


def test_interrupted_and_partly_refused_prompts(tmp_path: Path, lora: Path, monkeypatch, capsys) -> None:
    loras = tmp_path / "loras"
    loras.mkdir()
    interrupted = json.loads(json.dumps(capture("ws_execution_error_ckpt.json")).replace(
        '"execution_error"', '"execution_interrupted"'))
    with ComfyStandIn(png, loras_dir=loras) as comfy:
        comfy.fail_with = interrupted
        code, out = run_cli(monkeypatch, capsys, "bench", "--lora", lora, "--backend", "comfyui", "--comfy-url",
                            comfy.url, "--workflow", WORKFLOW, "--lora-install-dir", loras, "--out", tmp_path / "b1")
        assert code != 0 and "interrupted in ComfyUI" in " ".join(out.split())
        # HTTP 200 with node_errors: ComfyUI queued the valid outputs; lorakit reports and deletes the prompt
        comfy.fail_with = None
        comfy.accept_with_errors = capture("err_value_bigger_than_max.json")["body"]["node_errors"]
        code, out = run_cli(monkeypatch, capsys, "bench", "--lora", lora, "--backend", "comfyui", "--comfy-url",
                            comfy.url, "--workflow", WORKFLOW, "--lora-install-dir", loras, "--out", tmp_path / "b2")
        assert code != 0 and "refused the workflow" in out
        assert comfy.deleted == [comfy.prompt_ids[-1]]


def test_a_prompt_that_leaves_the_queue_ends_the_wait(lora: Path) -> None:
    """No message about the prompt and /queue no longer lists it (the captured empty queue), no history: the wait
    ends with a clear error instead of hanging."""
    from lorakit.bench import comfyui
    from lorakit.errors import LorakitError

    workflow = json.loads(WORKFLOW.read_text())
    with ComfyStandIn(png) as comfy:
        comfy.silent = True
        with comfyui.Connection(comfy.url, "c1", check_every=0.2) as connection:
            prompt_id = comfyui.submit(comfy.url, workflow, "c1")
            with pytest.raises(LorakitError, match=f"prompt {prompt_id} is gone from ComfyUI's queue"):
                connection.follow(prompt_id)


def test_comfyui_needs_one_safetensors_file(tmp_path: Path, monkeypatch, capsys) -> None:
    folder = tmp_path / "peft_lora"
    folder.mkdir()
    with ComfyStandIn(png) as comfy:
        code, out = run_cli(monkeypatch, capsys, "bench", "--lora", folder, "--backend", "comfyui", "--comfy-url",
                            comfy.url, "--workflow", WORKFLOW, "--out", tmp_path / "b")
    assert code != 0 and "ComfyUI loads a LoRA from one .safetensors file" in " ".join(out.split())
