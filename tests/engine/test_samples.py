"""Sample images during training: kohya's prompt lines, the schedule, the files and sheet, and a training run that
is bit-identical with and without samples."""

from __future__ import annotations

import random
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from lorakit import api
from lorakit.config.loader import resolve_layers
from lorakit.config.plan import build_plan
from lorakit.engine import samples
from lorakit.engine.sample_prompts import PromptError, SamplePrompt, parse_line, prompt_lines, resolve_prompts
from lorakit.engine.samples import SampleRenderer, cell_size, letterbox, preserved_rng, sheet_size
from lorakit.errors import ConfigError


def config(tmp_path: Path, *extra: str, images: Path | None = None):
    images = images or tmp_path / "images"
    return resolve_layers(sets=[
        f"data.train_data_dir='{images}'", f"output.output_dir='{tmp_path / 'runs'}'", "data.resolution=64",
        "network.network_dim=2", *extra]).config


# -- kohya's prompt lines --------------------------------------------------------------------------------------------

def test_a_line_with_every_option() -> None:
    assert parse_line("a cat --n blurry --w 64 --h 96 --s 5 --l 6.5 --d 3") == {
        "prompt": "a cat", "negative_prompt": "blurry", "width": 64, "height": 96, "steps": 5,
        "guidance_scale": 6.5, "seed": 3}


def test_options_are_case_insensitive_and_the_last_wins() -> None:
    assert parse_line("  a dog, sitting  --W 128 --n ugly, low quality --w 256") == {
        "prompt": "a dog, sitting", "width": 256, "negative_prompt": "ugly, low quality"}
    assert parse_line("just a prompt") == {"prompt": "just a prompt"}


@pytest.mark.parametrize("line, message", [
    ("a cat --w abc", "--w abc: must be a whole number"),
    ("a cat --w 100", "--w 100: must be a multiple of 8"),
    ("a cat --h 32", "--h 32: must be a multiple of 8 between 64"),
    ("a cat --s 0", "--s 0: steps must be a whole number from 1 to 1000"),
    ("a cat --s 1001", "--s 1001: steps must be a whole number from 1 to 1000"),
    ("a cat --l high", "--l high: the guidance scale"),
    ("a cat --d -1", "--d -1: the seed"),
    ("a cat --n", "--n: give the negative prompt"),
    ("a cat --ss euler_a", "--ss: kohya's option for a per-prompt sampler"),
    ("a cat --g 3.5", "--g: kohya's option for distilled guidance (FLUX-style models) is not supported; remove it"),
    ("a cat --x 3", "--x 3: unknown option"),
    ("--w 64", "no prompt before the options"),
])
def test_bad_options_are_refused(line: str, message: str) -> None:
    with pytest.raises(PromptError, match="^" + re.escape(message)):
        parse_line(line)


def test_prompts_then_file_lines_skipping_comments(tmp_path: Path) -> None:
    f = tmp_path / "prompts.txt"
    f.write_text("# kohya-style prompts\n\nred cube --w 64\n   \n  # indented comment\nblue ball --d 9\n",
                 encoding="utf-8")
    assert prompt_lines(["inline"], str(f)) == [
        ("sample.prompts[0]", "inline"), (f"{f}:3", "red cube --w 64"), (f"{f}:6", "blue ball --d 9")]


def test_defaults_come_from_the_section_and_the_training_size() -> None:
    cfg = resolve_layers(sets=[
        "data.image_size=[128, 64]", "sample.prompts=['a', 'b --w 64 --l 1 --n none']",
        "sample.negative_prompt='bad'", "sample.steps=3", "sample.guidance_scale=5.5", "sample.seed=4"]).config
    assert resolve_prompts(cfg) == [SamplePrompt("a", "bad", 128, 64, 3, 5.5, 4),
                                    SamplePrompt("b", "none", 64, 64, 3, 1.0, 4)]


def test_validation_names_the_bad_line(tmp_path: Path) -> None:
    f = tmp_path / "p.txt"
    f.write_text("good one\n# skipped\nbad one --w 100\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"sample\.prompts_file: .*p\.txt:3 \('bad one --w 100'\): --w 100"):
        resolve_layers(sets=[f"sample.prompts_file='{f}'"], check_paths=True)
    with pytest.raises(ConfigError, match=r"sample\.prompts: sample\.prompts\[1\] \('a cat --ss euler'\): --ss"):
        resolve_layers(sets=["sample.prompts=['ok', 'a cat --ss euler']"])


def test_missing_file_and_settings_without_prompts_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"sample\.prompts_file: .*nope\.txt: not found"):
        resolve_layers(sets=[f"sample.prompts_file='{tmp_path / 'nope.txt'}'"], check_paths=True)
    with pytest.raises(ConfigError, match=r"sample\.every_n_steps: is set but there are no sample prompts"):
        resolve_layers(sets=["sample.every_n_steps=10"])
    with pytest.raises(ConfigError, match=r"sample\.prompts_file: p\.toml: kohya's \.toml/\.json prompt files"):
        resolve_layers(sets=["sample.prompts_file='p.toml'"])
    empty = tmp_path / "empty.txt"
    empty.write_text("# only a comment\n\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"empty\.txt: holds no prompt"):
        resolve_layers(sets=[f"sample.prompts_file='{empty}'"], check_paths=True)
    with pytest.raises(ConfigError, match=r"sample\.width"):
        resolve_layers(sets=["sample.prompts=['a']", "sample.width=100"])


# -- the schedule ----------------------------------------------------------------------------------------------------

def test_due_every_n_steps_and_every_n_epochs(tmp_path: Path) -> None:
    cfg = config(tmp_path, "sample.prompts=['a']", "sample.every_n_steps=4", "sample.every_n_epochs=3")
    r = SampleRenderer(cfg, None, tmp_path, lambda: None, None)
    assert [s for s in range(1, 13) if r.due(s, None)] == [4, 8, 12]
    assert [e for e in range(1, 10) if r.due(5, e)] == [3, 6, 9]  # an epoch that ends at step 5


def test_plan_lists_the_sample_steps(tmp_path: Path) -> None:
    from conftest import write_images

    images = write_images(tmp_path / "images", count=4)  # 4 steps per epoch at batch 1
    cfg = config(tmp_path, "train.max_train_epochs=4", "sample.prompts=['a']", "sample.every_n_steps=5",
                 "sample.every_n_epochs=2", images=images)
    assert build_plan(cfg).steps.sample_steps == (5, 8, 10, 15)
    assert build_plan(config(tmp_path, "train.max_train_epochs=4", images=images)).steps.sample_steps == ()


# -- files, sheet and the unchanged training -------------------------------------------------------------------------

def test_preserved_rng_restores_every_global_generator() -> None:
    random.seed(1), np.random.seed(1), torch.manual_seed(1)
    expected = (random.random(), np.random.rand(), torch.rand(1).item())
    random.seed(1), np.random.seed(1), torch.manual_seed(1)
    with preserved_rng():
        random.random(), np.random.rand(), torch.rand(5)
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == expected


def test_letterbox_centres_the_image_in_the_cell() -> None:
    cell = cell_size([SamplePrompt("a", "", 64, 64, 1, 1, 1), SamplePrompt("b", "", 64, 96, 1, 1, 1)])
    assert cell == (64 + 2 * samples.PAD, 96 + 2 * samples.PAD)
    boxed = np.asarray(letterbox(Image.new("RGB", (64, 64), (255, 0, 0)), cell))
    assert boxed.shape == (cell[1], cell[0], 3)
    red = np.argwhere((boxed == [255, 0, 0]).all(axis=2))
    assert red.min(axis=0).tolist() == [20, 4] and red.max(axis=0).tolist() == [83, 67]  # rows 20..83, cols 4..67
    # a large sample is shrunk so the sheet stays small: the long side becomes THUMB
    assert cell_size([SamplePrompt("a", "", 1024, 512, 1, 1, 1)]) == (256 + 8, 128 + 8)


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The same 3-step run (with LoRA dropout, which draws from torch's global generator) without and with samples
    at step 0, every 2 steps and at the end: 2 prompts, one from a file with its own size."""
    from conftest import write_images

    tmp = tmp_path_factory.mktemp("samples")
    write_images(tmp / "images")
    prompts = tmp / "prompts.txt"
    prompts.write_text("# tall one\nblue ball --h 96 --d 5\n", encoding="utf-8")
    base = ("train.max_train_steps=3", "network.network_dropout=0.2", "train.learning_rate=1e-2")
    notices: list[str] = []

    class Notices:
        def on_notice(self, message: str) -> None:
            notices.append(message)

    off = api.train(config(tmp, *base))
    on = api.train(config(tmp, *base, "sample.prompts=['red cube']", f"sample.prompts_file='{prompts}'",
                          "sample.every_n_steps=2", "sample.steps=1", "sample.guidance_scale=1.0"),
                   callbacks=[Notices()])
    return {"off": off, "on": on, "notices": notices}


def test_sampling_does_not_change_the_trained_lora(runs: dict) -> None:
    off, on = load_file(runs["off"].lora_path), load_file(runs["on"].lora_path)
    assert off.keys() == on.keys()
    assert all(torch.equal(off[k], on[k]) for k in off)
    assert any(on[k].abs().sum() > 0 for k in on if k.endswith("lora_up.weight"))  # it did train


def test_sample_files_and_contact_sheet(runs: dict) -> None:
    folder = runs["on"].run_dir / "samples"
    names = sorted(p.name for p in folder.iterdir())
    assert names == ["contact_sheet.png"] + [f"step{s:08d}_{i:02d}.png" for s in (0, 2, 3) for i in (0, 1)]
    assert not (runs["off"].run_dir / "samples").exists()
    for step in (0, 2, 3):
        assert Image.open(folder / f"step{step:08d}_00.png").size == (64, 64)  # the training size
        assert Image.open(folder / f"step{step:08d}_01.png").size == (64, 96)  # --h 96
    cell = (64 + 2 * samples.PAD, 96 + 2 * samples.PAD)
    assert Image.open(folder / "contact_sheet.png").size == sheet_size(3, 2, cell) == (
        samples.LABEL_WIDTH + 2 * cell[0], samples.HEADER_HEIGHT + 3 * cell[1])
    assert [n.split(":")[0] for n in runs["notices"] if n.startswith("samples at")] == [
        "samples at step 0", "samples at step 2", "samples at step 3"]
    # step 0 renders the base model (the LoRA starts at zero); the trained LoRA changes the image
    first, last = (np.asarray(Image.open(folder / f"step{s:08d}_00.png")) for s in (0, 3))
    assert not np.array_equal(first, last)


def test_a_render_never_overwrites(tmp_path: Path) -> None:
    """Rendering the same step into a folder that holds its files writes new names beside them."""
    from contextlib import nullcontext

    from lorakit.families import load_model

    cfg = config(tmp_path, "sample.prompts=['a']", "sample.steps=1", "sample.guidance_scale=1.0")
    parts = load_model(cfg.model)
    r = SampleRenderer(cfg, parts, tmp_path / "s", nullcontext, type("E", (), {"on_notice": lambda *_: None})())
    first, second = r.render(0), r.render(0)
    assert [p.name for p in first + second] == ["step00000000_00.png", "step00000000_00_2.png"]
    assert np.array_equal(np.asarray(Image.open(first[0])), np.asarray(Image.open(second[0])))  # seeded
    assert Image.open(tmp_path / "s" / "contact_sheet.png").size == sheet_size(2, 1, (72, 72))


@pytest.mark.parametrize("model", ["tiny-sd1", "tiny-sdxl"])
def test_decode_outside_autocast_equals_the_pipelines_own(model: str) -> None:
    """Samples denoise under the training autocast and decode in the VAE's dtype; in fp32 that is exactly what the
    pipeline itself returns."""

    from lorakit.config.schema import ModelSection
    from lorakit.engine.samples import decode
    from lorakit.families import load_model

    pipe = load_model(ModelSection(pretrained_model_name_or_path=model)).pipeline
    pipe.set_progress_bar_config(disable=True)
    args = dict(prompt="a cat", width=64, height=64, num_inference_steps=2, guidance_scale=5.0)
    own = pipe(**args, generator=torch.Generator().manual_seed(3)).images[0]
    latents = pipe(**args, generator=torch.Generator().manual_seed(3), output_type="latent").images
    assert np.array_equal(np.asarray(decode(pipe, latents)), np.asarray(own))


def test_a_failed_render_warns_and_training_goes_on(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A render that fails (out of GPU memory, say) costs its images, not the run."""
    from lorakit.engine.events import Callback
    from lorakit.engine.samples import SampleRenderer

    def fail(self, step):
        raise RuntimeError("CUDA out of memory (simulated)")

    monkeypatch.setattr(SampleRenderer, "render", fail)
    warnings: list[str] = []

    class Warnings(Callback):
        def on_warning(self, message: str) -> None:
            warnings.append(message)

    images = tmp_path / "imgs"
    from conftest import write_images

    write_images(images, count=2)
    cfg = resolve_layers(sets=[f"data.train_data_dir='{images}'", f"output.output_dir='{tmp_path / 'runs'}'",
                               "data.resolution=64", "train.max_train_steps=2", "network.network_dim=2",
                               "sample.prompts=['a cat --s 1']"]).config
    result = api.train(cfg, [Warnings()])
    assert result.steps == 2 and result.lora_path.is_file()
    assert warnings == ["samples at step 0 failed (RuntimeError: CUDA out of memory (simulated)); training goes on",
                        "samples at step 2 failed (RuntimeError: CUDA out of memory (simulated)); training goes on"]
