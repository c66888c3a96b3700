"""The [bench] config section: plan defaults, the ComfyUI workflow's own settings, where prompts come from, the
checks run before a bench, the CLI reading a run's config snapshot, and embedding similarity through the CLI.

Expected values come from the issue's defaults, from the workflow file itself (ComfyUI's API format: a node input
that is `[node_id, output_index]` is a link, comfy/graph.py / execution.py), and for similarity from transformers'
CLIPVisionModelWithProjection.forward (image_embeds = visual_projection(post_layernorm(CLS))) and the cosine
formula; never from lorakit's own output.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import run_cli
from lorakit.bench.configure import plan_from_section, run_prompts, with_overrides
from lorakit.bench.plan import BenchPlan
from lorakit.config.bench_rules import check_bench
from lorakit.config.schema import BenchSection, LorakitConfig
from lorakit.errors import ConfigError

CAPTURES = Path(__file__).resolve().parents[2].parent / "shared" / "testdata" / "comfyui-captures"
needs_captures = pytest.mark.skipif(not (CAPTURES / "workflow_api_lora.json").is_file(),
                                    reason="ComfyUI captures (../shared/testdata/comfyui-captures) not present")


def workflow_values(path: Path) -> dict:
    """What a ComfyUI API workflow renders with, read by following the KSampler's links by hand."""
    graph = json.loads(path.read_text(encoding="utf-8"))
    [sampler] = [n["inputs"] for n in graph.values() if n["class_type"] == "KSampler"]
    [latent] = [n["inputs"] for n in graph.values() if n["class_type"] == "EmptyLatentImage"]
    [ckpt] = [n["inputs"]["ckpt_name"] for n in graph.values() if n["class_type"] == "CheckpointLoaderSimple"]
    positive, negative = (graph[sampler[side][0]]["inputs"]["text"] for side in ("positive", "negative"))
    return {"steps": sampler["steps"], "cfg": sampler["cfg"], "sampler": sampler["sampler_name"],
            "schedule": sampler["scheduler"], "width": latent["width"], "height": latent["height"],
            "prompt": positive, "negative_prompt": negative, "model": ckpt}


def workflow_with_sampler(tmp_path: Path, sampler_name: str) -> Path:
    """workflow_api_lora.json with another KSampler sampler_name."""
    graph = json.loads((CAPTURES / "workflow_api_lora.json").read_text(encoding="utf-8"))
    for node in graph.values():
        if node["class_type"] == "KSampler":
            node["inputs"]["sampler_name"] = sampler_name
    path = tmp_path / f"workflow_{sampler_name}.json"
    path.write_text(json.dumps(graph), encoding="utf-8")
    return path


# -- 1. builtin defaults -------------------------------------------------------------------------------------------

def test_builtin_plan_defaults_are_the_issues(tmp_path: Path) -> None:
    plan = plan_from_section(BenchSection(), tmp_path / "x.safetensors", "tiny-sd1", ["a cat"])
    assert (plan.sampler, plan.schedule, plan.steps, plan.cfg, plan.negative_prompt) == ("euler", "normal", 20, 7.0, "")
    assert plan.weights == [0.0, 0.4, 0.6, 0.8, 1.0] and plan.seeds == [123456789, 987654321]
    assert (plan.width, plan.height, plan.batch_size, plan.backend) == (None, None, 1, "builtin")
    assert plan.model == "tiny-sd1" and plan.prompts == ["a cat"] and plan.lora == str(tmp_path / "x.safetensors")


def test_builtin_plan_takes_the_sections_values(tmp_path: Path) -> None:
    section = BenchSection(sampler="DPM++ 2M Karras", steps=7, cfg=4.5, negative_prompt="ugly", width=96, height=128,
                           weights=[0.0, 0.5], seeds=[3], prompts=["a dog"], batch_size=2)
    plan = plan_from_section(section, tmp_path / "x.safetensors", "tiny-sd1", ["ignored"])
    # A1111's "DPM++ 2M Karras" is ComfyUI's dpmpp_2m with the karras scheduler
    assert (plan.sampler, plan.schedule, plan.steps, plan.cfg) == ("dpmpp_2m", "karras", 7, 4.5)
    assert (plan.negative_prompt, plan.width, plan.height, plan.batch_size) == ("ugly", 96, 128, 2)
    assert (plan.weights, plan.seeds, plan.prompts) == ([0.0, 0.5], [3], ["a dog"])


# -- 2. comfyui: the workflow's own settings ---------------------------------------------------------------------

@needs_captures
def test_comfyui_plan_takes_unset_values_from_the_workflow(tmp_path: Path) -> None:
    path = CAPTURES / "workflow_api_lora.json"
    want = workflow_values(path)
    plan = plan_from_section(BenchSection(backend="comfyui", workflow=str(path)), tmp_path / "x.safetensors",
                             "tiny-sd1", ["a sample prompt"])
    assert (plan.steps, plan.cfg, plan.sampler, plan.schedule) == (want["steps"], want["cfg"], want["sampler"],
                                                                   want["schedule"])
    assert (plan.width, plan.height, plan.negative_prompt) == (want["width"], want["height"], want["negative_prompt"])
    assert plan.prompts == [want["prompt"]] and plan.model == want["model"] != "tiny-sd1"
    assert plan.backend == "comfyui" and plan.workflow == str(path.resolve())


@needs_captures
def test_comfyui_plan_section_values_win_over_the_workflow(tmp_path: Path) -> None:
    path = CAPTURES / "workflow_api_lora.json"
    want = workflow_values(path)
    section = BenchSection(backend="comfyui", workflow=str(path), steps=want["steps"] + 3, cfg=want["cfg"] + 1.5,
                           width=want["width"] + 64, negative_prompt="not " + want["negative_prompt"],
                           sampler="ddim", scheduler="karras", prompts=["mine"])
    plan = plan_from_section(section, tmp_path / "x.safetensors", "tiny-sd1")
    assert (plan.steps, plan.cfg, plan.width, plan.height) == (want["steps"] + 3, want["cfg"] + 1.5,
                                                               want["width"] + 64, want["height"])
    assert (plan.sampler, plan.schedule, plan.negative_prompt) == ("ddim", "karras", "not " + want["negative_prompt"])
    assert plan.prompts == ["mine"]


@needs_captures
def test_a_comfyui_only_sampler_is_accepted_for_comfyui_and_refused_for_builtin(tmp_path: Path) -> None:
    path = workflow_with_sampler(tmp_path, "dpmpp_2m_sde")
    plan = plan_from_section(BenchSection(backend="comfyui", workflow=str(path)), tmp_path / "x.safetensors", "m")
    assert plan.sampler == "dpmpp_2m_sde"
    comfy = LorakitConfig(bench=BenchSection(backend="comfyui", workflow=str(path), sampler="dpmpp_2m_sde"))
    assert [f for f in check_bench(comfy) if f.key == "bench.sampler"] == []
    builtin = LorakitConfig(bench=BenchSection(sampler="dpmpp_2m_sde"))
    [finding] = [f for f in check_bench(builtin) if f.key == "bench.sampler"]
    assert finding.error and "dpmpp_2m_sde" in finding.message
    with pytest.raises(ConfigError, match="dpmpp_2m_sde"):
        BenchPlan(prompts=["a"], seeds=[1], weights=[0.0], sampler="dpmpp_2m_sde")
    with pytest.raises(ConfigError, match="dpmpp_2m_sde"):
        plan_from_section(BenchSection(sampler="dpmpp_2m_sde"), tmp_path / "x.safetensors", "m", ["a"])


# -- 3. where the prompts come from --------------------------------------------------------------------------------

def config_with(tmp_path: Path, sample_prompts: list[str] = (), captions: dict[str, str] | None = None,
                **bench: object) -> LorakitConfig:
    data = {}
    if captions is not None:
        folder = tmp_path / "data"
        folder.mkdir(exist_ok=True)
        for stem, text in captions.items():
            Image.new("RGB", (8, 8), (10, 20, 30)).save(folder / f"{stem}.png")
            (folder / f"{stem}.txt").write_text(text, encoding="utf-8")
        data = {"train_data_dir": str(folder)}
    return LorakitConfig.model_validate({"data": data, "sample": {"prompts": list(sample_prompts)}, "bench": bench})


def prompts_for(config: LorakitConfig, tmp_path: Path) -> list[str]:
    return plan_from_section(config.bench, tmp_path / "x.safetensors", "m", run_prompts(config)).prompts


@needs_captures
def test_prompts_come_from_the_section_then_the_workflow(tmp_path: Path) -> None:
    path = CAPTURES / "workflow_api_lora.json"
    cfg = config_with(tmp_path, ["a cat"], {"img": "a caption"}, backend="comfyui", workflow=str(path),
                      prompts=["p1", "p2"])
    assert prompts_for(cfg, tmp_path) == ["p1", "p2"]
    cfg = config_with(tmp_path, ["a cat"], {"img": "a caption"}, backend="comfyui", workflow=str(path))
    assert prompts_for(cfg, tmp_path) == [workflow_values(path)["prompt"]]


def test_prompts_come_from_sample_prompts_without_kohya_options(tmp_path: Path) -> None:
    cfg = config_with(tmp_path, ["a cat --n blurry --s 20", "a dog --w 512 --h 768 --l 5 --d 3"], {"img": "cap"})
    assert prompts_for(cfg, tmp_path) == ["a cat", "a dog"]
    cfg = config_with(tmp_path, ["a cat --n blurry"], {"img": "cap"}, prompts=["mine"])
    assert prompts_for(cfg, tmp_path) == ["mine"]


def test_prompts_fall_back_to_the_first_training_caption(tmp_path: Path) -> None:
    cfg = config_with(tmp_path, [], {"b_img": "second caption", "a_img": "first caption\nsecond line"})
    assert prompts_for(cfg, tmp_path) == ["first caption"]


def test_the_caption_is_an_images_not_a_stray_text_file(tmp_path: Path) -> None:
    cfg = config_with(tmp_path, [], {"img": "the image's caption"})
    (tmp_path / "data" / "0_README.txt").write_text("notes about this dataset", encoding="utf-8")
    assert prompts_for(cfg, tmp_path) == ["the image's caption"]


def test_no_prompt_anywhere_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="bench.prompts"):
        prompts_for(config_with(tmp_path), tmp_path)
    with pytest.raises(ConfigError, match="bench.prompts"):  # images without captions give no prompt either
        prompts_for(config_with(tmp_path, [], {"img": "  \n"}), tmp_path)


# -- 4. validation of the section --------------------------------------------------------------------------------

def test_comfyui_without_a_workflow_is_refused() -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="bench.workflow"):
        BenchSection(backend="comfyui")
    with pytest.raises(ConfigError) as exc:
        with_overrides(BenchSection(), backend="comfyui")
    assert any("bench.workflow" in p for p in exc.value.problems)


@pytest.mark.parametrize("key, value", [("width", 100), ("height", 68), ("steps", 0), ("cfg", -1.0),
                                        ("batch_size", 65), ("backend", "a1111")])
def test_with_overrides_names_the_bench_key(key: str, value: object) -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError):
        BenchSection(**{key: value})
    with pytest.raises(ConfigError) as exc:
        with_overrides(BenchSection(), **{key: value})
    assert [p.split(":")[0] for p in exc.value.problems] == [f"bench.{key}"]


def test_with_overrides_keeps_unset_values_and_replaces_given_ones() -> None:
    section = with_overrides(BenchSection(steps=5, cfg=3.0, seeds=[1, 2]), steps=None, cfg=6.0, width=None)
    assert (section.steps, section.cfg, section.seeds, section.width) == (5, 6.0, [1, 2], None)


# -- 5. check_bench with paths -----------------------------------------------------------------------------------

def test_missing_paths_are_warnings_unless_benching(tmp_path: Path) -> None:
    bench = BenchSection(backend="comfyui", workflow=str(tmp_path / "nope.json"),
                         lora_install_dir=str(tmp_path / "loras"), embedding_model=str(tmp_path / "clip"))
    cfg = LorakitConfig(bench=bench)
    assert check_bench(cfg) == []  # without paths nothing on disk is looked at
    for benching, error in ((False, False), (True, True)):
        found = {f.key: f for f in check_bench(cfg, paths=True, benching=benching)}
        assert set(found) == {"bench.workflow", "bench.lora_install_dir", "bench.embedding_model"}
        assert all(f.error is error for f in found.values())
        assert "nope.json" in found["bench.workflow"].message
        assert str(tmp_path / "loras") in found["bench.lora_install_dir"].message
    (tmp_path / "loras").mkdir()
    (tmp_path / "clip").mkdir()
    found = check_bench(cfg, paths=True, benching=True)
    assert [f.key for f in found] == ["bench.workflow"]


@needs_captures
def test_a_ui_format_workflow_is_reported(tmp_path: Path) -> None:
    cfg = LorakitConfig(bench=BenchSection(backend="comfyui", workflow=str(CAPTURES / "workflow_ui_format.json")))
    [finding] = check_bench(cfg, paths=True, benching=True)
    assert finding.key == "bench.workflow" and finding.error and "UI format" in finding.message
    ok = LorakitConfig(bench=BenchSection(backend="comfyui", workflow=str(CAPTURES / "workflow_api_lora.json")))
    assert check_bench(ok, paths=True, benching=True) == []


# -- 6. the CLI reads the run's snapshot ---------------------------------------------------------------------------

class Captured:
    summary: list[str] = []

    def __init__(self) -> None:
        self.calls: list[tuple] = []
        self.index = Path("index.html")

    def __call__(self, plan, out=None, train_dir=None, progress=None, comfy=None, embedding_model=None):
        self.calls.append((plan, out, train_dir, comfy, embedding_model))
        return self


def run_folder(tmp_path: Path, bench_toml: str, model: str = "tiny-sd2-v") -> Path:
    """runs/<id>/train/x.safetensors beside runs/<id>/config.toml (the snapshot); returns the LoRA."""
    run = tmp_path / "runs" / "20260101-000000-x"
    (run / "train").mkdir(parents=True)
    lora = run / "train" / "x.safetensors"
    lora.write_bytes(b"not read: api.bench is replaced")
    data = tmp_path / "data"
    data.mkdir(exist_ok=True)
    Image.new("RGB", (8, 8)).save(data / "img.png")
    (data / "img.txt").write_text("caption from data", encoding="utf-8")
    (run / "config.toml").write_text(
        f'[model]\npretrained_model_name_or_path = "{model}"\n\n[data]\ntrain_data_dir = "{data.as_posix()}"\n\n'
        f"[bench]\n{bench_toml}\n", encoding="utf-8")
    return lora


def test_cli_takes_weights_seeds_and_model_from_the_run(tmp_path: Path, monkeypatch, capsys) -> None:
    from lorakit import api

    lora = run_folder(tmp_path, "weights = [0.0, 0.3]\nseeds = [11, 22, 33]\nsteps = 4")
    captured = Captured()
    monkeypatch.setattr(api, "bench", captured)
    code, out = run_cli(monkeypatch, capsys, "bench", "--lora", lora)
    assert code == 0, out
    [(plan, out_dir, train_dir, _, embedding)] = captured.calls
    assert (plan.weights, plan.seeds, plan.steps, plan.model) == ([0.0, 0.3], [11, 22, 33], 4, "tiny-sd2-v")
    assert plan.prompts == ["caption from data"] and out_dir is None and embedding is None
    assert train_dir == tmp_path / "data"

    code, out = run_cli(monkeypatch, capsys, "bench", "--lora", lora, "--weights", "0,0.7,1", "--seeds", "5")
    assert code == 0, out
    plan = captured.calls[-1][0]
    assert (plan.weights, plan.seeds, plan.steps) == ([0.0, 0.7, 1.0], [5], 4)  # the snapshot's steps stay


def test_cli_config_file_replaces_the_snapshots_bench(tmp_path: Path, monkeypatch, capsys) -> None:
    from lorakit import api

    lora = run_folder(tmp_path, "weights = [0.0, 0.3]\nseeds = [11]\nsteps = 4")
    other = tmp_path / "other.toml"
    other.write_text("[bench]\nweights = [0.0, 0.9]\nseeds = [7, 8]\ncfg = 2.5\n", encoding="utf-8")
    captured = Captured()
    monkeypatch.setattr(api, "bench", captured)
    code, out = run_cli(monkeypatch, capsys, "bench", "--lora", lora, "--config", other, "--prompt", "p")
    assert code == 0, out
    plan = captured.calls[-1][0]
    assert (plan.weights, plan.seeds, plan.cfg, plan.steps) == ([0.0, 0.9], [7, 8], 2.5, 20)
    assert plan.prompts == ["p"] and plan.model == "tiny-sd2-v"  # the run still decides the base model


def test_cli_without_a_run_needs_a_model(tmp_path: Path, monkeypatch, capsys) -> None:
    from lorakit import api

    lora = tmp_path / "x.safetensors"
    lora.write_bytes(b"x")
    monkeypatch.setattr(api, "bench", Captured())
    code, out = run_cli(monkeypatch, capsys, "bench", "--lora", lora, "--prompt", "p")
    assert code == 2 and "--model" in out


# -- 7. embedding similarity through the CLI -----------------------------------------------------------------------

def random_png(path: Path, seed: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(path)
    return path


def save_tiny_clip(folder: Path):
    import torch
    from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModelWithProjection

    torch.manual_seed(0)
    model = CLIPVisionModelWithProjection(CLIPVisionConfig(
        hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2, image_size=32,
        patch_size=8, projection_dim=12)).eval()
    model.save_pretrained(folder)
    CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(folder)
    return model


def clip_embedding(model, path: Path):
    """A 32×32 image needs no resize or crop: /255, then (x - mean) / std with OpenAI's CLIP constants
    (transformers' OPENAI_CLIP_MEAN/STD, CLIPImageProcessor's defaults), then the model's image_embeds."""
    import torch

    mean, std = [0.48145466, 0.4578275, 0.40821073], [0.26862954, 0.26130258, 0.27577711]
    x = torch.from_numpy(np.asarray(Image.open(path).convert("RGB"), dtype=np.float32) / 255).permute(2, 0, 1)
    x = (x - torch.tensor(mean)[:, None, None]) / torch.tensor(std)[:, None, None]
    with torch.no_grad():
        v = model(pixel_values=x[None]).image_embeds[0].double()
    return v / v.norm()


def test_embedding_similarity_columns_through_the_cli(tmp_path: Path, monkeypatch, capsys) -> None:
    from lorakit.bench import sweep
    from lorakit.bench.render import Rendered

    model = save_tiny_clip(tmp_path / "clip")
    train = [random_png(tmp_path / "train" / f"t{i}.png", 100 + i) for i in range(3)]

    def fake_render(plan, folder, progress=None):
        return [Rendered(p, s, w, random_png(folder / f"p{p}_s{s}_w{w:g}.png", 7 * s + int(10 * w)))
                for p, s, w in plan.images()]

    monkeypatch.setattr(sweep, "render_plan", fake_render)
    lora = tmp_path / "x.safetensors"
    lora.write_bytes(b"x")
    code, out = run_cli(monkeypatch, capsys, "bench", "--lora", lora, "--model", "tiny-sd1", "--prompt", "p",
                        "--weights", "0,1", "--seeds", "1,2", "--train-images", tmp_path / "train",
                        "--embedding-model", tmp_path / "clip", "--out", tmp_path / "bench")
    assert code == 0, out
    with open(tmp_path / "bench" / "metrics.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 4
    train_vectors = [clip_embedding(model, p) for p in train]
    for row in rows:
        image = clip_embedding(model, tmp_path / "bench" / row["file"])
        cosines = [float(image @ t) for t in train_vectors]
        assert math.isclose(float(row["clip_similarity"]), sum(cosines) / 3, rel_tol=2e-5, abs_tol=2e-6)
        assert math.isclose(float(row["clip_max_similarity"]), max(cosines), rel_tol=2e-5, abs_tol=2e-6)
    assert len({row["clip_similarity"] for row in rows}) == 4  # four different images, four values


def test_embedding_model_without_training_images_is_a_config_error(tmp_path: Path, monkeypatch, capsys) -> None:
    from lorakit import api

    (tmp_path / "clip").mkdir()
    lora = tmp_path / "x.safetensors"
    lora.write_bytes(b"x")
    captured = Captured()
    monkeypatch.setattr(api, "bench", captured)
    code, out = run_cli(monkeypatch, capsys, "bench", "--lora", lora, "--model", "tiny-sd1", "--prompt", "p",
                        "--embedding-model", tmp_path / "clip")
    assert code == 2 and "embedding_model" in out and "--train-images" in out
    assert captured.calls == []


def test_a1111_sampler_names_reach_comfyui_as_comfyuis() -> None:
    """ComfyUI's KSampler takes its own names: A1111's menu entries are mapped (diffusers' A1111 table), ComfyUI's
    own names and schedules pass unchanged."""
    from lorakit.bench.plan import BenchPlan

    def comfy(sampler: str, schedule: str = "normal") -> tuple[str, str]:
        plan = BenchPlan(prompts=["p"], seeds=[1], weights=[0.0], sampler=sampler, schedule=schedule,
                         backend="comfyui")
        return plan.sampler, plan.schedule

    assert comfy("Euler a") == ("euler_ancestral", "normal")
    assert comfy("DPM++ 2M Karras") == ("dpmpp_2m", "karras")
    assert comfy("ddim", "karras") == ("ddim", "karras") and comfy("dpmpp_2m_sde", "exponential") == (
        "dpmpp_2m_sde", "exponential")
