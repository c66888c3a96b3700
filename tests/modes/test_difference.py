"""Difference mode: the copy machine learns the original, then a LoRA learns what the target changes (a slider)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from lorakit import api
from lorakit.config.loader import resolve_layers
from lorakit.config.validate import check
from lorakit.engine.encode import BatchEncoder
from lorakit.engine.trainer import Run
from lorakit.errors import ConfigError, DataError, LorakitError
from lorakit.families import load_model
from lorakit.modes.difference import COPY, read_images, training_size
from lorakit.networks.attach import adapter_weights, network_parameters, read_state, tuner_layers
from lorakit.networks.formats import read_lora_file
from lorakit.networks.loading import attach_file
from lorakit.runs import new_run_dir
from networks.helpers import unet_output

STEPS, PASS2_STEPS, LR = 30, 20, 1e-2  # the tiny UNet at rank 2–4


def write_pair(folder: Path, target_size: tuple[int, int] = (64, 64)) -> tuple[Path, Path]:
    """A two-tone original and the same picture with a bright square: what the slider should learn."""
    folder.mkdir(parents=True, exist_ok=True)
    original = np.zeros((64, 64, 3), np.uint8)
    original[:, :] = (40, 90, 160)
    original[40:] = (120, 70, 30)
    target = original.copy()
    target[12:36, 12:36] = (250, 250, 240)
    paths = folder / "original.png", folder / "target.png"
    Image.fromarray(original).save(paths[0])
    Image.fromarray(target).resize(target_size).save(paths[1])
    return paths


def config(tmp: Path, original: Path | None, target: Path | None, *extra: str, steps: int = STEPS):
    sets = ["mode.type='difference'", f"output.output_dir='{tmp / 'runs'}'", "data.resolution=64",
            f"train.max_train_steps={steps}", f"train.learning_rate={LR}", "network.network_dim=4",
            "network.network_alpha=4", "train.train_batch_size=2", "output.save_precision='fp32'", *extra]
    sets += [f"mode.original_image='{original}'"] if original else []
    sets += [f"mode.target_image='{target}'"] if target else []
    return resolve_layers(sets=sets).config


SECOND_PASS = ("mode.second_pass.network_dim=2", "mode.second_pass.network_alpha=2",
               f"mode.second_pass.max_train_steps={PASS2_STEPS}", "mode.second_pass.train_batch_size=3")


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return write_pair(tmp_path_factory.mktemp("pair"))


@pytest.fixture(scope="module")
def trained(pair, tmp_path_factory: pytest.TempPathFactory):
    """Both passes (the copy machine saved too, pass 2 with its own rank, steps and batch), watched stage by stage: for each stage, the
    copy machine's parameters in its optimizer groups, whether they require gradients, and whether every layer
    applies the copy machine."""
    tmp = tmp_path_factory.mktemp("trained")
    cfg = config(tmp, *pair, "mode.save_first_pass=true", *SECOND_PASS, "data.cache_latents_to_disk=true",
                 f"data.cache_folder='{tmp / 'cache'}'")
    run = Run(cfg, new_run_dir(tmp / "runs"))
    seen = []
    train_stage = run.train_stage

    def watched(stage):
        copy = {id(p): p for p in network_parameters(run.parts.unet, COPY)}
        in_groups = sum(id(p) in copy for g in stage.groups for p in g["params"])
        applied = all(COPY in layer.active_adapters for layer in tuner_layers(run.parts))
        seen.append((stage.adapter, in_groups, any(p.requires_grad for p in copy.values()), applied))
        return train_stage(stage)

    run.train_stage = watched  # type: ignore[method-assign]
    return cfg, run, run.execute(), seen


def one_step_x0(parts, latents: torch.Tensor, t: int, noise: torch.Tensor) -> torch.Tensor:
    """Noise the latents to timestep t and denoise in one step: x0 = (x_t − sqrt(1−ᾱ)·eps) / sqrt(ᾱ)."""
    abar = parts.noise_scheduler.alphas_cumprod[t]
    x_t = abar.sqrt() * latents + (1 - abar).sqrt() * noise
    fam, n = parts.family, latents.shape[0]
    with torch.no_grad():
        cond = fam.encode_prompts(parts, [""] * n)
        sizes = [{"original_size": (64, 64), "crop_top_left": (0, 0), "target_size": (64, 64)}] * n
        eps = parts.unet(x_t, torch.full((n,), t), **fam.unet_kwargs(cond, sizes)).sample
    return (x_t - (1 - abar).sqrt() * eps) / abar.sqrt()


def test_copy_machine_is_applied_frozen_and_unchanged_in_pass_2(trained) -> None:
    cfg, run, result, seen = trained
    # pass 1 trains the copy machine; in pass 2 it is applied to every layer but in no optimizer group, frozen
    assert [(a, n > 0, grad, on) for a, n, grad, on in seen] == [(COPY, True, True, True),
                                                                  ("lorakit", False, False, True)]
    assert result.steps == STEPS + PASS2_STEPS
    # the copy machine in memory after pass 2 is the file written at the end of pass 1, to the bit
    reloaded = load_model(cfg.model)
    attach_file(reloaded, load_file(result.stage_files[0]), adapter=COPY)
    after, saved = read_state(run.parts, COPY), read_state(reloaded, COPY)
    assert after and saved.keys() == after.keys()
    assert all(torch.equal(saved[m][k], after[m][k].cpu()) for m in after for k in after[m])


def test_slider_moves_the_copy_toward_the_target(trained, pair) -> None:
    """Reload both files; the one-step denoised original with the copy machine and the slider at w."""
    cfg, _, result, _ = trained
    parts = load_model(cfg.model)
    # the exact latents both passes trained on, read back from the run's disk cache
    encoder = BatchEncoder(parts, torch.device("cpu"), torch.float32, True, False, 0, Path(cfg.data.cache_folder))
    examples = [image.example("") for image in read_images(cfg.mode, 64 * 64)]
    encoder.prefill(examples, 1)
    original, target = (encoder.latents[e.key][None] for e in examples)
    noise = torch.randn((4, *original.shape[1:]), generator=torch.Generator().manual_seed(5))
    original, target = original.expand(4, -1, -1, -1), target.expand(4, -1, -1, -1)
    attach_file(parts, read_lora_file(result.stage_files[0])[0], adapter=COPY)
    t = 600
    copy_only = one_step_x0(parts, original, t, noise)
    attach_file(parts, read_lora_file(result.lora_path)[0])  # the slider, adapter "lorakit"
    distance = {}
    for w in (0.0, 1.0, -1.0):
        with adapter_weights(parts, {"lorakit": w}):
            x0 = one_step_x0(parts, original, t, noise)
        if w == 0:
            assert torch.equal(x0, copy_only)  # at weight 0 the slider adds nothing to the copy machine
        distance[w] = (x0 - target).flatten(1).norm(dim=1).mean().item()
    print(f"distance to the target latent at weight {distance}")
    assert distance[1.0] < 0.97 * distance[0.0], distance  # toward the target
    assert distance[-1.0] > 1.03 * distance[0.0], distance  # the opposite way


def test_first_pass_file_skips_pass_1_and_gives_the_same_slider(trained, pair, tmp_path: Path) -> None:
    cfg, _, first, _ = trained
    copy_file = first.stage_files[0]
    assert copy_file.name == "lora_copy.safetensors"
    again = api.train(config(tmp_path, None, pair[1], f"mode.first_pass_file='{copy_file}'", *SECOND_PASS))
    assert again.steps == PASS2_STEPS and again.stage_files == []  # pass 2 only
    assert sorted(p.name for p in (again.run_dir / "train").glob("*.safetensors")) == ["lora.safetensors"]
    a, b = load_file(first.lora_path), load_file(again.lora_path)
    # the same seed re-set before pass 2, the same copy machine (saved in fp32): bit for bit the same slider
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_first_pass_file_of_another_type_is_refused(trained, pair, tmp_path: Path) -> None:
    copy_file = trained[2].stage_files[0]
    with pytest.raises(LorakitError, match="is a lora network but network.network_module is 'loha'"):
        api.train(config(tmp_path, None, pair[1], f"mode.first_pass_file='{copy_file}'",
                         "network.network_module='loha'", steps=1))
    # `config validate` says so first (type and family; the copy machine keeps its own rank)
    cfg = config(tmp_path, None, pair[1], f"mode.first_pass_file='{copy_file}'", "network.network_module='loha'",
                 "network.network_dim=8")
    assert [(f.key, f.message) for f in check(cfg, paths=True)[0]] == [
        ("mode.first_pass_file", f"{copy_file} is a lora network but network.network_module is 'loha'")]


def test_second_pass_rank_and_copy_rank(trained) -> None:
    result = trained[2]
    ranks = {name: {v.shape[0] for k, v in load_file(path).items() if k.endswith("lora_down.weight")}
             for name, path in (("copy", result.stage_files[0]), ("slider", result.lora_path))}
    assert ranks == {"copy": {4}, "slider": {2}}


def test_first_pass_only_writes_the_copy_machine(pair, tmp_path: Path) -> None:
    result = api.train(config(tmp_path, pair[0], None, "mode.first_pass_only=true", steps=2))
    assert result.steps == 2
    assert [p.name for p in (result.run_dir / "train").glob("*.safetensors")] == ["lora_copy.safetensors"]
    assert result.lora_path.name == "lora_copy.safetensors" and result.stage_files == []
    assert any(k.endswith("lora_up.weight") and v.abs().sum() > 0 for k, v in load_file(result.lora_path).items())


def test_images_of_different_sizes_are_refused_before_training(tmp_path: Path) -> None:
    original, target = write_pair(tmp_path / "imgs", target_size=(64, 72))
    with pytest.raises(DataError) as err:
        api.train(config(tmp_path, original, target))
    assert f"mode.original_image {original} is 64×64 pixels but mode.target_image {target} is 64×72" in str(err.value)
    assert not list((tmp_path / "runs").rglob("*.safetensors"))
    # and `config validate` says so before anything loads, from the images' headers
    errors = [f"{f.key}: {f.message}" for f in check(config(tmp_path, original, target), paths=True)[0]]
    assert errors == [f"mode.target_image: {target} is 64×72 pixels but mode.original_image {original} is 64×64: "
                      "the two images must be the same size (crop or resize one to match the other)"]


def test_settings_that_would_be_ignored_are_refused(pair, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="target_image: is not set"):  # a path check, like train_data_dir
        resolve_layers(sets=["mode.type='difference'", f"mode.original_image='{pair[0]}'"], check_paths=True)
    with pytest.raises(ConfigError, match="second_pass is set but first_pass_only skips pass 2"):
        config(tmp_path, *pair, "mode.first_pass_only=true", "mode.second_pass.network_dim=2")
    with pytest.raises(ConfigError, match="save_first_pass with first_pass_file"):
        config(tmp_path, *pair, "mode.save_first_pass=true", f"mode.first_pass_file='{pair[0]}'")


def test_training_size_keeps_small_images_and_scales_large_ones_down() -> None:
    assert training_size((64, 72), 512 * 512) == ((64, 72), False)
    assert training_size((100, 70), 512 * 512) == ((96, 64), False)  # centre-cropped to multiples of 8
    (w, h), scaled = training_size((1024, 768), 512 * 512)  # 591.2 × 443.4 at the area, then down to 8s
    assert scaled and (w, h) == (584, 440) and w * h <= 512 * 512


@pytest.mark.parametrize("network", [  # lora: the tests above
    ["network.network_module='locon'", "network.conv_dim=2"], ["network.network_module='loha'"],
    ["network.network_module='lokr'"]], ids=["locon", "loha", "lokr"])
def test_every_network_type_trains_both_passes(network: list[str], pair, tmp_path: Path) -> None:
    result = api.train(config(tmp_path, *pair, "mode.save_first_pass=true", *network, steps=1))
    copy, slider = load_file(result.stage_files[0]), load_file(result.lora_path)
    assert copy.keys() == slider.keys()  # the same network type in both passes, stacked on the same layers
    assert any(not torch.equal(copy[k], slider[k]) for k in copy)  # two networks, not one saved twice
    parts = load_model(config(tmp_path, *pair, *network).model)
    attach_file(parts, slider)
    with adapter_weights(parts, {"lorakit": 0.0}):
        base = unet_output(parts)
    assert not torch.allclose(unet_output(parts), base)  # pass 2 trained: the slider changes the model


def test_dora_and_overrides_that_would_not_apply_are_refused(pair, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="network.use_dora: DoRA in mode 'difference' is not implemented yet"):
        config(tmp_path, *pair, "network.use_dora=true")
    with pytest.raises(ConfigError, match="mode.second_pass.network_dim: pass 2 would keep network.conv_dim"):
        config(tmp_path, *pair, "network.network_module='locon'", "network.conv_dim=8",
               "mode.second_pass.network_dim=2")


def test_a_stop_during_pass_1_keeps_the_copy_machine(pair, tmp_path: Path) -> None:
    """Stopping (Ctrl-C, the queue's stop) in pass 1 saves the copy machine even without save_first_pass, and it
    is the run's result; a save request saves it too."""
    from lorakit.engine.events import Callback, Commands

    commands = Commands()

    class StopAt(Callback):
        def on_step(self, event) -> None:
            commands.save = event.step == 1
            commands.stop = event.step == 2

    result = api.train(config(tmp_path, *pair, steps=5), [StopAt()], commands)
    assert result.stopped and result.steps == 2
    files = sorted(p.name for p in (result.run_dir / "train").glob("*.safetensors"))
    assert files == ["lora_copy-step00000001.safetensors", "lora_copy.safetensors"]
    assert result.lora_path.name == "lora_copy.safetensors" and result.lora_path.is_file()


@pytest.mark.parametrize("module", ["lora", "locon"])  # loha/lokr: network_dropout is refused (none in peft)
def test_a_frozen_copy_machine_drops_nothing(module: str) -> None:
    """With network_dropout, the frozen copy machine must give the same output at every step of pass 2."""
    from lorakit.config.schema import ModelSection, NetworkSection
    from lorakit.networks.attach import attach_network, freeze_adapter

    parts = load_model(ModelSection())
    attach_network(parts, NetworkSection(network_module=module, network_dim=2, network_dropout=0.5), adapter=COPY)
    for p in network_parameters(parts.unet, COPY):
        torch.nn.init.normal_(p, std=0.1)  # a trained copy machine: every factor non-zero
    parts.unet.train()
    assert not torch.equal(unet_output(parts), unet_output(parts))  # dropout draws differ between calls
    freeze_adapter(parts, COPY)
    parts.unet.train()
    assert torch.equal(unet_output(parts), unet_output(parts))


def test_checkpoints_are_named_by_the_runs_step(pair, tmp_path: Path) -> None:
    """Pass 2's checkpoints count the run's steps, as log.csv and the samples do (pass 1 had 3)."""
    result = api.train(config(tmp_path, *pair, "mode.save_first_pass=true", "output.save_every_n_steps=2", steps=3))
    files = sorted(p.name for p in (result.run_dir / "train").glob("*.safetensors"))
    assert files == ["lora-step00000005.safetensors", "lora.safetensors", "lora_copy-step00000002.safetensors",
                     "lora_copy.safetensors"]
    assert load_file(result.checkpoints[1]).keys() == load_file(result.lora_path).keys()


def test_samples_show_the_copy_machine_in_pass_1_and_the_slider_alone_after(pair, tmp_path: Path,
                                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """Pass 2's samples (and the final ones) render the slider on the base model, as the file will be used."""
    from lorakit.engine.samples import SampleRenderer

    seen: dict[int, list[str]] = {}

    def record(self, step):
        layer = next(layer for layer in tuner_layers(self.parts) if COPY in layer.scaling)
        seen[step] = sorted(layer.active_adapters)
        self.last_step = step
        return []

    monkeypatch.setattr(SampleRenderer, "render", record)
    api.train(config(tmp_path, *pair, "sample.prompts=['a face --s 1']", "sample.every_n_steps=1", steps=2))
    assert seen == {0: [COPY], 1: [COPY], 2: [COPY], 3: ["lorakit"], 4: ["lorakit"]}  # pass 1: steps 1–2
