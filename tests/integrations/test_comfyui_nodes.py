"""lorakit's ComfyUI nodes against a stand-in for ComfyUI's folder API.

The stand-ins follow ComfyUI's folder_paths.py: get_filename_list(folder) lists the files under each of the
folder's paths relative to it, sorted, filtered by extension; get_full_path(folder, name) is the first existing
<path>/<name> or None; get_folder_paths(folder) is the list of paths (the first is the default one). And
comfy/model_management.py's unload_all_models() / soft_empty_cache(), recorded here.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import sys
import tomllib
import types
from pathlib import Path

import pytest

from lorakit.jobs.store import JobStore

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "integrations" / "comfyui"
EXTENSIONS = {".ckpt", ".pt", ".bin", ".pth", ".safetensors", ".pkl", ".sft"}  # folder_paths.supported_pt_extensions


def stand_in_folder_paths(models: Path) -> types.ModuleType:
    paths = {name: [str(models / name)] for name in ("checkpoints", "loras", "vae")}
    module = types.ModuleType("folder_paths")

    def get_folder_paths(folder: str) -> list[str]:
        return list(paths[folder])

    def get_filename_list(folder: str) -> list[str]:
        found = set()
        for base in paths[folder]:
            for dirpath, _, files in os.walk(base):
                found.update(os.path.relpath(os.path.join(dirpath, f), base) for f in files
                             if os.path.splitext(f)[1].lower() in EXTENSIONS)
        return sorted(found)

    def get_full_path(folder: str, filename: str) -> str | None:
        for base in paths.get(folder, []):
            full = os.path.join(base, filename)
            if os.path.isfile(full):
                return full
        return None

    module.get_folder_paths, module.get_filename_list, module.get_full_path = (get_folder_paths, get_filename_list,
                                                                               get_full_path)
    return module


@pytest.fixture()
def comfy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    models = tmp_path / "ComfyUI" / "models"
    for name in ("checkpoints", "loras", "vae"):
        (models / name).mkdir(parents=True)
    (models / "checkpoints" / "sd15.safetensors").write_bytes(b"not a real model")
    (models / "checkpoints" / "notes.txt").write_text("not listed")
    monkeypatch.setitem(sys.modules, "folder_paths", stand_in_folder_paths(models))
    calls: list[str] = []
    mm = types.ModuleType("comfy.model_management")
    mm.unload_all_models = lambda: calls.append("unload_all_models")
    mm.soft_empty_cache = lambda force=False: calls.append("soft_empty_cache")
    package = types.ModuleType("comfy")
    package.model_management = mm
    monkeypatch.setitem(sys.modules, "comfy", package)
    monkeypatch.setitem(sys.modules, "comfy.model_management", mm)
    monkeypatch.setenv("LORAKIT_HOME", str(tmp_path / "home"))
    spec = importlib.util.spec_from_file_location("lorakit_comfy_nodes", PACKAGE / "__init__.py",
                                                  submodule_search_locations=[str(PACKAGE)])
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "lorakit_comfy_nodes", module)
    spec.loader.exec_module(module)
    nodes = sys.modules["lorakit_comfy_nodes.nodes"]
    started: list[Path] = []
    monkeypatch.setattr(nodes, "start_runner", started.append)  # no training process in tests
    return types.SimpleNamespace(nodes=nodes, package=module, models=models, calls=calls, started=started,
                                 home=tmp_path / "home", tmp=tmp_path)


def train_inputs(comfy, **overrides):
    dataset = comfy.tmp / "images"
    dataset.mkdir(exist_ok=True)
    from PIL import Image

    Image.new("RGB", (64, 64), "red").save(dataset / "a.png")
    (dataset / "a.txt").write_text("a red square")
    values = dict(ckpt_name="sd15.safetensors", mode="lora", network="locon", dataset_folder=str(dataset),
                  original_prompt="", target_prompt="", rank=8, alpha=4.0, learning_rate=2e-4, steps=30,
                  resolution=256, preset="(none)", output_name="comfy-test", free_comfy_models=False)
    values.update(overrides)
    return values


def test_mappings_and_input_types(comfy) -> None:
    assert set(comfy.package.NODE_CLASS_MAPPINGS) == {"LorakitTrainLoRA", "LorakitQueueStatus",
                                                     "LorakitLoadTrainedLoRA", "LorakitApplyTrainedLoRA"}
    assert comfy.package.NODE_DISPLAY_NAME_MAPPINGS["LorakitTrainLoRA"] == "lorakit Train LoRA"
    for cls in comfy.package.NODE_CLASS_MAPPINGS.values():
        assert callable(getattr(cls, cls.FUNCTION)) and cls.CATEGORY == "lorakit"
        assert isinstance(cls.RETURN_TYPES, tuple)
    required = comfy.nodes.LorakitTrainLoRA.INPUT_TYPES()["required"]
    # the linked MODEL's checkpoint first (ComfyUI's default is a combo's first entry); the .txt is no model
    assert required["ckpt_name"][0] == ["(the linked MODEL's checkpoint)", "sd15.safetensors"]
    optional = comfy.nodes.LorakitTrainLoRA.INPUT_TYPES()["optional"]
    assert optional["model"][0] == "MODEL" and optional["original_image"][0] == optional["target_image"][0] == "IMAGE"
    assert required["mode"][0] == ["lora", "ileco", "difference"]
    assert required["network"][0] == ["lora", "locon", "loha", "lokr"]
    assert required["free_comfy_models"] == ("BOOLEAN", {"default": True})
    presets = required["preset"][0]
    assert presets[0] == "(none)" and "ileco-erase" in presets and required["preset"][1]["default"] == "(none)"
    assert required["rank"][0] == "INT" and required["learning_rate"][0] == "FLOAT"
    assert comfy.nodes.LorakitTrainLoRA.RETURN_TYPES == ("INT",)
    assert comfy.nodes.LorakitLoadTrainedLoRA.RETURN_TYPES == ("STRING",)


def test_train_enqueues_the_resolved_checkpoint_and_settings(comfy) -> None:
    (job_id,) = comfy.nodes.LorakitTrainLoRA().train(**train_inputs(comfy))
    job = JobStore(comfy.home).get(job_id)
    config = tomllib.loads(job.config)
    assert job.state == "queued" and job.name == "comfy-test"
    assert config["model"]["pretrained_model_name_or_path"] == str(comfy.models / "checkpoints" / "sd15.safetensors")
    assert config["network"]["network_module"] == "locon"
    assert (config["network"]["network_dim"], config["network"]["network_alpha"]) == (8, 4.0)
    assert config["train"]["learning_rate"] == 2e-4 and config["train"]["max_train_steps"] == 30
    assert config["data"]["resolution"] == 256
    assert config["data"]["train_data_dir"] == str(comfy.tmp / "images")
    assert config["output"]["output_dir"] == str(comfy.home / "comfyui-runs")
    assert comfy.started == [comfy.home] and comfy.calls == []


def test_free_comfy_models_unloads_before_queueing(comfy) -> None:
    comfy.nodes.LorakitTrainLoRA().train(**train_inputs(comfy, free_comfy_models=True))
    assert comfy.calls == ["unload_all_models", "soft_empty_cache"]


def test_train_errors_name_the_problem(comfy) -> None:
    with pytest.raises(ValueError, match="missing.safetensors"):
        comfy.nodes.LorakitTrainLoRA().train(**train_inputs(comfy, ckpt_name="missing.safetensors"))
    with pytest.raises(ValueError, match="could not queue"):
        comfy.nodes.LorakitTrainLoRA().train(**train_inputs(comfy, dataset_folder=str(comfy.tmp / "nowhere"),
                                                            free_comfy_models=True))
    assert comfy.started == [] and comfy.calls == []  # a refused job leaves ComfyUI's models loaded


def done_job(comfy, lora: bytes, state: str = "done", message: str = ""):
    (job_id,) = comfy.nodes.LorakitTrainLoRA().train(**train_inputs(comfy))
    run = comfy.tmp / "run"
    (run / "train").mkdir(parents=True, exist_ok=True)
    (run / "train" / "comfy-test.safetensors").write_bytes(lora)
    (run / "train" / "comfy-test-step00000010.safetensors").write_bytes(b"intermediate")  # trainer.py's naming
    (run / "config.toml").write_text('version = 3\n[output]\noutput_name = "comfy-test"\n', encoding="utf-8")
    store = JobStore(comfy.home)
    store.update(job_id, run_dir=str(run))
    store.finish(job_id, state, 0 if state == "done" else 1, message)
    return job_id


def test_load_copies_the_final_lora_under_its_content_name(comfy) -> None:
    job_id = done_job(comfy, b"final lora bytes")
    (name,) = comfy.nodes.LorakitLoadTrainedLoRA().load(job_id)
    assert name == f"lorakit-comfy-test-{hashlib.sha256(b'final lora bytes').hexdigest()[:12]}.safetensors"
    assert (comfy.models / "loras" / name).read_bytes() == b"final lora bytes"
    assert comfy.nodes.LorakitLoadTrainedLoRA().load(job_id) == (name,)  # again: the same file, kept
    status = comfy.nodes.LorakitQueueStatus().status(job_id)[0]
    assert "done" in status and str(comfy.tmp / "run") in status


def test_apply_loads_the_installed_file_into_model_and_clip(comfy, monkeypatch) -> None:
    """As ComfyUI's LoraLoader.load_lora: comfy.utils.load_torch_file(path, safe_load=True), then
    comfy.sd.load_lora_for_models(model, clip, lora, strength_model, strength_clip); both strengths 0 = unchanged."""
    calls = []
    utils, sd = types.ModuleType("comfy.utils"), types.ModuleType("comfy.sd")
    utils.load_torch_file = lambda path, safe_load=False: calls.append(("load", path, safe_load)) or {"w": 1}
    sd.load_lora_for_models = lambda m, c, lora, sm, sc: calls.append(("apply", m, c, lora, sm, sc)) or (
        f"{m}+lora", f"{c}+lora")
    monkeypatch.setitem(sys.modules, "comfy.utils", utils)
    monkeypatch.setitem(sys.modules, "comfy.sd", sd)
    sys.modules["comfy"].utils, sys.modules["comfy"].sd = utils, sd
    job_id = done_job(comfy, b"applied lora")
    node = comfy.nodes.LorakitApplyTrainedLoRA()
    model, clip, name = node.apply("MODEL", "CLIP", job_id, 0.8, 0.5)
    assert (model, clip) == ("MODEL+lora", "CLIP+lora")
    assert calls == [("load", str(comfy.models / "loras" / name), True), ("apply", "MODEL", "CLIP", {"w": 1}, 0.8, 0.5)]
    assert (comfy.models / "loras" / name).read_bytes() == b"applied lora"
    calls.clear()
    assert node.apply("MODEL", "CLIP", job_id, 0.0, 0.0) == ("MODEL", "CLIP", name) and calls == []
    assert set(comfy.nodes.LorakitApplyTrainedLoRA.INPUT_TYPES()["required"]) == {
        "model", "clip", "job_id", "strength_model", "strength_clip"}
    assert comfy.nodes.NODE_DISPLAY_NAME_MAPPINGS["LorakitApplyTrainedLoRA"] == "lorakit Apply trained LoRA"


def test_failed_and_unfinished_jobs_raise_with_their_state(comfy) -> None:
    job_id = done_job(comfy, b"x", state="failed", message="CUDA out of memory at step 3")
    with pytest.raises(RuntimeError, match="CUDA out of memory at step 3"):
        comfy.nodes.LorakitLoadTrainedLoRA().load(job_id)
    (queued,) = comfy.nodes.LorakitTrainLoRA().train(**train_inputs(comfy, output_name="other"))
    with pytest.raises(RuntimeError, match=r"not finished yet \(state queued\)"):
        comfy.nodes.LorakitLoadTrainedLoRA().load(queued)
    before = comfy.nodes.LorakitLoadTrainedLoRA.IS_CHANGED(job_id=queued)
    JobStore(comfy.home).update(queued, state="running")
    assert comfy.nodes.LorakitLoadTrainedLoRA.IS_CHANGED(job_id=queued) != before  # ComfyUI re-runs the node
    # a job_id linked from the Train node: execution.py's IsChangedCache passes None for linked inputs; the
    # value must differ from itself every time (NaN), or the status would stay cached forever
    for node in (comfy.nodes.LorakitQueueStatus, comfy.nodes.LorakitLoadTrainedLoRA,
                 comfy.nodes.LorakitApplyTrainedLoRA):
        changed = node.IS_CHANGED(job_id=None)
        assert changed != changed


def test_install_copies_and_refuses_a_different_folder(tmp_path: Path) -> None:
    from lorakit.cli.comfyui import install
    from lorakit.errors import LorakitError

    (tmp_path / "ComfyUI" / "custom_nodes").mkdir(parents=True)
    target, done = install(tmp_path / "ComfyUI")
    assert done == "copied" and (target / "nodes.py").read_bytes() == (PACKAGE / "nodes.py").read_bytes()
    assert install(tmp_path / "ComfyUI")[1] == "already installed"
    (target / "nodes.py").write_text("someone else's nodes")
    with pytest.raises(LorakitError, match="already exists"):
        install(tmp_path / "ComfyUI")
    assert (target / "nodes.py").read_text() == "someone else's nodes"
    with pytest.raises(LorakitError, match="custom_nodes"):
        install(tmp_path / "not-comfy")


class StandInModelPatcher:
    """comfy.model_patcher.ModelPatcher as a loader leaves it: `cached_patcher_init = (loader, (ckpt_path, …))`
    (how recent ComfyUI rebuilds a model) and `patches`, the weight patches a LoraLoader adds (add_patches)."""

    def __init__(self, path: object, patches: dict | None = None) -> None:
        self.cached_patcher_init = (lambda *a, **k: None, (path, None))
        self.patches = patches or {}


def test_train_on_the_linked_models_checkpoint(comfy) -> None:
    ckpt = comfy.models / "checkpoints" / "sub" / "loaded.safetensors"
    ckpt.parent.mkdir()
    ckpt.write_bytes(b"the loaded model")
    node = comfy.nodes.LorakitTrainLoRA()
    (job_id,) = node.train(**train_inputs(comfy, ckpt_name="(the linked MODEL's checkpoint)",
                                          model=StandInModelPatcher(str(ckpt))))
    config = tomllib.loads(JobStore(comfy.home).get(job_id).config)
    assert config["model"]["pretrained_model_name_or_path"] == str(ckpt)
    outside = comfy.tmp / "unet-only.safetensors"
    outside.write_bytes(b"a diffusion model")
    cases = [(None, "no MODEL is linked"), (object(), "does not say which file"),
             (StandInModelPatcher(str(outside)), "not from models/checkpoints"),
             (StandInModelPatcher(str(ckpt), patches={"diffusion_model.x.weight": [(1.0,)]}), "weight patches")]
    for model, message in cases:
        with pytest.raises(ValueError, match=message):
            node.train(**train_inputs(comfy, ckpt_name="(the linked MODEL's checkpoint)", model=model,
                                      output_name="again"))
    with pytest.raises(ValueError, match="a MODEL is linked and ckpt_name names 'sd15.safetensors'"):
        node.train(**train_inputs(comfy, model=StandInModelPatcher(str(ckpt)), output_name="again"))
    assert len(JobStore(comfy.home).jobs()) == 1


def test_ileco_job_reads_the_prompts_only(comfy) -> None:
    node = comfy.nodes.LorakitTrainLoRA()
    (job_id,) = node.train(**train_inputs(comfy, mode="ileco", dataset_folder="", original_prompt="van gogh",
                                          target_prompt="photo", output_name="erase"))
    config = tomllib.loads(JobStore(comfy.home).get(job_id).config)
    assert config["mode"]["type"] == "ileco"
    assert (config["mode"]["original_prompt"], config["mode"]["target_prompt"]) == ("van gogh", "photo")
    assert config["data"]["train_data_dir"] == ""  # the resolved config: the default, no folder
    with pytest.raises(ValueError, match="mode ileco does not read dataset_folder: clear"):
        node.train(**train_inputs(comfy, mode="ileco", original_prompt="x", output_name="other"))
    with pytest.raises(ValueError, match="mode lora does not read original_prompt, target_prompt"):
        node.train(**train_inputs(comfy, original_prompt="x", target_prompt="y", output_name="other"))


def test_difference_job_saves_the_linked_images(comfy) -> None:
    """IMAGE is ComfyUI's [batch, height, width, channels] float tensor in 0..1; SaveImage writes
    clip(255 × value) truncated to 8 bits, and so must the files the job trains on."""
    import numpy as np
    import torch
    from PIL import Image

    before = torch.zeros(1, 64, 96, 3)
    before[0, :, :, 0] = 0.5  # 127.5 → 127
    after = before.clone()
    after[0, 10:20, 10:20, 1] = 1.0
    node = comfy.nodes.LorakitTrainLoRA()
    (job_id,) = node.train(**train_inputs(comfy, mode="difference", dataset_folder="", original_prompt="a girl",
                                          original_image=before, target_image=after, output_name="slider"))
    mode = tomllib.loads(JobStore(comfy.home).get(job_id).config)["mode"]
    assert mode["type"] == "difference" and mode["prompt"] == "a girl"
    original, target = Path(mode["original_image"]), Path(mode["target_image"])
    assert original.parent == comfy.home / "comfyui-inputs" and original != target
    pixels = np.asarray(Image.open(original))
    assert pixels.shape == (64, 96, 3) and pixels[0, 0].tolist() == [127, 0, 0]
    assert np.asarray(Image.open(target))[15, 15].tolist() == [127, 255, 0]
    (again,) = node.train(**train_inputs(comfy, mode="difference", dataset_folder="", original_image=before,
                                         target_image=after, output_name="slider2"))
    assert tomllib.loads(JobStore(comfy.home).get(again).config)["mode"]["original_image"] == str(original)
    with pytest.raises(ValueError, match="needs original_image and target_image"):
        node.train(**train_inputs(comfy, mode="difference", dataset_folder="", original_image=before,
                                  output_name="slider3"))
    with pytest.raises(ValueError, match="one image"):
        node.train(**train_inputs(comfy, mode="difference", dataset_folder="", original_image=before.repeat(2, 1, 1, 1),
                                  target_image=after, output_name="slider4"))


def test_a_traintrain_preset_imported_into_the_home_is_a_node_preset(comfy, monkeypatch, capsys) -> None:
    """`lorakit config import tt.json --out <home>/presets/NAME.toml` (docs/comfyui.md): the node lists it as
    "NAME (saved)" and a job queued with it carries the preset's settings under the node's own inputs."""
    import json

    from conftest import run_cli

    src = comfy.tmp / "tt.json"  # a TrainTrain LoRA preset, its keys as scripts/traintrain.py names them
    src.write_text(json.dumps({"mode": "LoRA", "network_type": "lierla", "network_rank": "32", "network_alpha": "16",
                               "train_optimizer": "lion", "train_lr_scheduler": "constant", "train_snr_gamma": "3",
                               "train_model_precision": "fp32",  # fp16 (its default) does not train on a CPU
                               "network_blocks(BASE = TextEncoder)": ["IN04", "OUT03"]}), encoding="utf-8")
    code, out = run_cli(monkeypatch, capsys, "config", "import", src, "--out", comfy.home / "presets" / "tt-style.toml")
    assert code == 0, out
    presets = comfy.nodes.LorakitTrainLoRA.INPUT_TYPES()["required"]["preset"][0]
    assert presets[-1] == "tt-style (saved)"
    (job_id,) = comfy.nodes.LorakitTrainLoRA().train(**train_inputs(comfy, preset="tt-style (saved)"))
    config = tomllib.loads(JobStore(comfy.home).get(job_id).config)
    assert config["train"]["optimizer_type"] == "Lion" and config["train"]["lr_scheduler"] == "constant"
    assert config["train"]["min_snr_gamma"] == 3.0 and config["network"]["blocks"] == ["IN04", "OUT03"]
    assert config["network"]["network_dim"] == 8  # the node's rank input wins over the preset's 32
    (comfy.home / "presets" / "tt-style.toml").unlink()
    with pytest.raises(ValueError, match="is gone; refresh ComfyUI"):
        comfy.nodes.LorakitTrainLoRA().train(**train_inputs(comfy, preset="tt-style (saved)", output_name="x"))
