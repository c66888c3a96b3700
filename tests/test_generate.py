"""`generate` loads a LoRA file or a PEFT folder with the trained strength, and rejects bad requests clearly."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from lorakit import api
from lorakit.config.loader import load_config
from lorakit.config.schema import ModelSection
from lorakit.errors import ConfigError, LorakitError
from lorakit.families import load_model
from lorakit.generate import apply_lora


@torch.no_grad()
def unet_out(parts) -> torch.Tensor:
    cond = parts.family.encode_prompts(parts, ["a cat"])
    gen = torch.Generator().manual_seed(0)
    return parts.unet(torch.randn((1, 4, 8, 8), generator=gen), torch.tensor([300]), **cond).sample


def test_peft_folder_and_kohya_file_give_the_same_model(tmp_path: Path, image_dir: Path) -> None:
    cfg = load_config(sets=[
        f'data.train_data_dir="{image_dir}"', f'output.output_dir="{tmp_path}"', "data.resolution=64",
        "train.max_train_steps=3", "train.learning_rate=1e-2", "network.network_dim=4", "network.network_alpha=1",
        "output.save_format='both'", "output.save_precision='fp32'",
    ])
    result = api.train(cfg)
    outputs = []
    for lora in (result.lora_path, result.peft_dir):
        parts = load_model(ModelSection(pretrained_model_name_or_path="tiny-sd1"))
        apply_lora(parts, lora, 0.7)
        outputs.append(unet_out(parts))
    base = unet_out(load_model(ModelSection(pretrained_model_name_or_path="tiny-sd1")))
    assert (outputs[0] - base).abs().max() > 1e-4
    assert (outputs[0] - outputs[1]).abs().max() <= 1e-5


def test_bad_requests(tmp_path: Path) -> None:
    req = api.GenerateRequest(model="tiny-sd1", prompt="x", out_dir=tmp_path, steps=0, width=60)
    with pytest.raises(ConfigError) as exc:
        api.generate(req)
    assert any("--steps 0" in p for p in exc.value.problems) and any("--width 60" in p for p in exc.value.problems)
    (tmp_path / "empty").mkdir()
    (tmp_path / "bad.safetensors").write_bytes(b"not a safetensors file")
    for lora in (tmp_path / "empty", tmp_path / "bad.safetensors"):
        with pytest.raises(LorakitError, match=lora.name):
            api.generate(api.GenerateRequest(model="tiny-sd1", prompt="x", out_dir=tmp_path, lora=lora, steps=1))


# -- a LoRA for another model is refused -------------------------------------------------------------------------

def lora_file(path: Path, model: str, metadata: bool = True, te: bool = False,
              targets: list[str] | None = None) -> Path:
    """A kohya LoRA of a tiny model with non-zero (as if trained) weights, with lorakit's metadata or none."""
    from lorakit.config.schema import NetworkSection
    from lorakit.networks import formats
    from lorakit.networks.attach import attach_network

    parts = load_model(ModelSection(pretrained_model_name_or_path=model))
    torch.manual_seed(0)
    extra = {"target_modules": targets} if targets else {}
    params = attach_network(parts, NetworkSection(network_dim=4, network_alpha=2, train_text_encoder=te, **extra))
    with torch.no_grad():
        for p in params:
            p.add_(torch.randn_like(p) * 0.2)
    meta = formats.kohya_metadata(
        parts, name="x", resolution=(64, 64), steps=1, epochs=1, learning_rate=1e-4,
        te_trained=te, seed=1, tag_frequency={}, num_images=1, created="2026-01-01T00:00:00+00:00",
    ) if metadata else {}
    return formats.save_kohya(path, formats.to_kohya(parts), meta)


def refused(tmp_path: Path, model: str, lora: Path) -> str:
    """The message of generate's refusal; nothing was rendered."""
    out = tmp_path / "out"
    with pytest.raises(LorakitError) as exc:
        api.generate(api.GenerateRequest(model=model, prompt="x", out_dir=out, lora=lora, steps=1))
    assert not out.exists() or not any(out.iterdir())
    return str(exc.value)


@pytest.mark.parametrize("lora_model,model,family,evidence", [
    ("tiny-sd2-v", "tiny-sd1", "sd2", "ss_base_model_version = sd_v2_v"),
    ("tiny-sdxl", "tiny-sd1", "sdxl", "ss_base_model_version = sdxl_base_v1-0"),
    ("tiny-sd1", "tiny-sdxl", "sd1", "ss_base_model_version = sd_v1"),
])
def test_lora_of_another_family_is_refused_by_its_metadata(tmp_path: Path, lora_model: str, model: str,
                                                           family: str, evidence: str) -> None:
    lora = lora_file(tmp_path / "x.safetensors", lora_model)
    own = load_model(ModelSection(pretrained_model_name_or_path=model)).family.name
    msg = refused(tmp_path, model, lora)
    assert msg.startswith(f"LoRA x.safetensors is for {family} ({evidence}), but {model} is an {own} model")


def test_lora_family_without_metadata_from_keys_and_shapes(tmp_path: Path) -> None:
    from safetensors import safe_open

    xl = lora_file(tmp_path / "xl.safetensors", "tiny-sdxl", metadata=False, te=True)
    assert refused(tmp_path, "tiny-sd1", xl).startswith(
        "LoRA xl.safetensors is for sdxl (its key names: lora_te1_/lora_te2_/input_blocks are SDXL's), but tiny-sd1 is")

    sd1 = lora_file(tmp_path / "sd1.safetensors", "tiny-sd1", metadata=False, te=True)
    with safe_open(str(sd1), "pt") as f:
        modules = {k.split(".")[0] for k in f.keys()}
    msg = refused(tmp_path, "tiny-sdxl", sd1)  # no lora_te_ / down_blocks module exists in SDXL
    assert f": {len(modules)} of {len(modules)} LoRA modules differ, e.g. " in msg
    assert msg.count("(not in the model)") == 3 and f"and {len(modules) - 3} more" in msg  # short, never all names

    # SD2's transformer projections are Linear, SD1's are 1×1 convolutions: same names, other layers
    sd2 = lora_file(tmp_path / "sd2.safetensors", "tiny-sd2-v", metadata=False, targets=["to_q", "proj_in"])
    with safe_open(str(sd2), "pt") as f:
        modules = {k.split(".")[0] for k in f.keys()}
    proj_in = [m for m in modules if m.endswith("_proj_in")]
    msg = refused(tmp_path, "tiny-sd1", sd2)
    assert len(proj_in) == 11  # 4 down, 1 mid, 6 up attention blocks
    assert (f"LoRA sd2.safetensors does not fit tiny-sd1 (an sd1 model): 11 of {len(modules)} LoRA modules differ, "
            "e.g. lora_unet_down_blocks_0_attentions_0_proj_in (linear in the LoRA, conv in the model)") in msg
    assert msg.count("(linear in the LoRA, conv in the model)") == 3 and msg.count(" more") == 1


def test_lora_width_differs_from_the_model(tmp_path: Path) -> None:
    """A real SD2 LoRA in an SD1 model: cross-attention and text widths 1024 vs 768 (tiny: 48 vs 32)."""
    from safetensors.torch import load_file, save_file

    sd = load_file(lora_file(tmp_path / "sd1.safetensors", "tiny-sd1", metadata=False))
    key = "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_k"
    sd[f"{key}.lora_down.weight"] = torch.zeros(4, 48)
    save_file(sd, str(tmp_path / "wide.safetensors"))
    msg = refused(tmp_path, "tiny-sd1", tmp_path / "wide.safetensors")
    assert f"1 of {len(sd) // 3} LoRA modules differ, e.g. {key} (LoRA 48→32, model 32→32)" in msg

    # the widths of the real models name the family when there is no metadata
    from lorakit.families import lora_family

    assert lora_family({f"{key}.lora_down.weight": [8, 1024]}, {}) == ("sd2", f"its text width 1024 ({key})")
    assert lora_family({"lora_te_text_model_encoder_layers_0_self_attn_q_proj.lora_down.weight": [8, 768]}, {})[0] \
        == "sd1"
    assert lora_family({}, {"modelspec.architecture": "stable-diffusion-v3-medium/lora"}) == (
        "sd3", "modelspec.architecture = stable-diffusion-v3-medium/lora")
    assert lora_family({f"{key}.lora_down.weight": [4, 32]}, {}) == (None, "")


def test_a_lora_of_the_same_family_still_renders(tmp_path: Path) -> None:
    from lorakit.generate import check_lora_fits

    for model in ("tiny-sd1", "tiny-sd2-v", "tiny-sdxl"):
        lora = lora_file(tmp_path / f"{model}.safetensors", model, te=True, targets=["to_q", "proj_in", "ff.net.2"])
        check_lora_fits(load_model(ModelSection(pretrained_model_name_or_path=model)), lora, model)
    paths = api.generate(api.GenerateRequest(model="tiny-sd2-v", prompt="x", out_dir=tmp_path / "out", steps=1,
                                             lora=tmp_path / "tiny-sd2-v.safetensors", weight=0.5))
    assert [p.name for p in paths] == ["image_seed1_w0.5.png"] and paths[0].stat().st_size > 0


def test_peft_folder_of_another_family_is_refused(tmp_path: Path) -> None:
    from lorakit.config.schema import NetworkSection
    from lorakit.networks import formats
    from lorakit.networks.attach import attach_network

    parts = load_model(ModelSection(pretrained_model_name_or_path="tiny-sdxl"))
    attach_network(parts, NetworkSection(network_dim=4, train_text_encoder=True))
    folder = formats.save_peft(tmp_path / "xl_peft", parts, torch.float32)
    msg = refused(tmp_path, "tiny-sd1", folder)
    state = formats.load_peft_folder(folder)
    total = sum(len({k.rpartition(".lora_")[0] for k in sd}) for sd in state.values())
    te2 = len({k.rpartition(".lora_")[0] for k in state["text_encoder_2"]})
    assert te2 == 12  # q, k, v, out, fc1, fc2 of 2 layers (kohya: CLIPAttention and CLIPMLP)
    # all of text_encoder_2; in the UNet the second transformer layer SD1 lacks, and attn2.to_k/to_v everywhere
    # (cross-attention width 64 vs 32)
    sd1_unet = dict(load_model(ModelSection(pretrained_model_name_or_path="tiny-sd1")).unet.named_modules())
    unet = {k.rpartition(".lora_")[0] for k in state["unet"]}
    bad = te2 + sum(1 for p in unet if p not in sd1_unet or p.endswith(("attn2.to_k", "attn2.to_v")))
    assert te2 + 34 < bad < total
    assert f"LoRA xl_peft does not fit tiny-sd1 (an sd1 model): {bad} of {total} LoRA modules differ, e.g. " \
           "text_encoder_2.text_model.encoder.layers.0." in msg
    assert msg.count("(no text_encoder_2 in the sd1 model)") == 3 and f"and {bad - 3} more" in msg


def test_not_a_lora_file(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    save_file({"model.diffusion_model.input_blocks.0.0.weight": torch.zeros(2)}, str(tmp_path / "ckpt.safetensors"))
    assert "holds no LoRA weights (1 tensors" in refused(tmp_path, "tiny-sd1", tmp_path / "ckpt.safetensors")


# -- requests checked before anything loads ----------------------------------------------------------------------

@pytest.mark.parametrize("value", ["nan", "inf", "-inf"])
def test_weight_must_be_finite(tmp_path: Path, value: str) -> None:
    req = api.GenerateRequest(model="tiny-sd1", prompt="x", out_dir=tmp_path, weight=float(value),
                              guidance_scale=float(value))
    with pytest.raises(ConfigError) as exc:
        api.generate(req)
    assert exc.value.problems == [f"--weight {float(value)}: must be a finite number (e.g. 0.8)",
                                  f"--guidance {float(value)}: must be a finite number (e.g. 7)"]


def run_cli(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture, *args: str) -> tuple[int, str]:
    import sys

    from lorakit.cli.main import main

    monkeypatch.setattr(sys, "argv", ["lorakit", *map(str, args)])
    with pytest.raises(SystemExit) as exc:
        main()
    out = capsys.readouterr()
    return int(exc.value.code or 0), " ".join((out.out + out.err).split())


def test_cli_family_that_the_model_contradicts(tmp_path: Path, monkeypatch, capsys) -> None:
    out = tmp_path / "out"
    code, text = run_cli(monkeypatch, capsys, "generate", "-m", "tiny-sd1", "--family", "sdxl", "-p", "x",
                         "-o", out)
    assert code == 2 and "model not found" not in text
    assert "tiny-sd1 is an sd1 model, not sdxl → drop --family (model.family = 'auto') or use sd1" in text

    folder = tmp_path / "my-sd2"  # a real local diffusers folder
    load_model(ModelSection(pretrained_model_name_or_path="tiny-sd2-v")).pipeline.save_pretrained(folder)
    code, text = run_cli(monkeypatch, capsys, "generate", "-m", folder, "--family", "sd1", "-p", "x", "-o", out)
    assert code == 2 and f"{folder} is an sd2 model, not sd1" in text

    from families.ldm_checkpoint import write_single_file  # tests/families: an original-layout checkpoint

    single = write_single_file(load_model(ModelSection(pretrained_model_name_or_path="tiny-sdxl")).pipeline, "sdxl",
                               tmp_path / "xl.safetensors")
    code, text = run_cli(monkeypatch, capsys, "generate", "-m", single, "--family", "sd2", "-p", "x", "-o", out)
    assert code == 2 and f"{single} is an sdxl model, not sd2" in text

    code, text = run_cli(monkeypatch, capsys, "generate", "-m", "tiny-sd1", "-p", "x", "--weight", "nan", "-o", out)
    assert code == 2 and "--weight nan: must be a finite number" in text
    assert not out.exists()
