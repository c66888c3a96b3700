"""Every network type × family: the saved FILE, applied with the published merge formulas (written here, not
lorakit's code), reproduces the in-memory peft model; files round-trip; LyCORIS-layout files load."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from lorakit.config.schema import ModelSection, NetworkSection
from lorakit.errors import LorakitError
from lorakit.families import FAMILIES, load_model
from lorakit.networks import formats
from lorakit.networks.attach import adapter_layers, attach_network, components
from lorakit.networks.loading import attach_file
from lorakit.networks.targets import select_targets

from .helpers import set_weight, unet_output

TINY = [f.tiny_name for f in FAMILIES.values()]
KINDS = {  # name: NetworkSection settings (LoCon-style types adapt the 3×3 convs at conv_dim/conv_alpha)
    "lora": dict(network_module="lora"),
    "locon": dict(network_module="locon", conv_dim=2, conv_alpha=3.0),
    "loha": dict(network_module="loha", conv_dim=2, conv_alpha=1.0),
    "lokr": dict(network_module="lokr", conv_dim=2, conv_alpha=1.0),
    "dora": dict(network_module="locon", use_dora=True, conv_dim=2, conv_alpha=1.0),
}


def adapted(name: str, kind: str, train_te: bool = True):
    """A tiny model with a network whose weights are random (as if trained)."""
    parts = load_model(ModelSection(pretrained_model_name_or_path=name))
    cfg = NetworkSection(network_dim=4, network_alpha=2, train_text_encoder=train_te, target_modules=[],
                         text_encoder_target_modules=[], **KINDS[kind])  # kohya's module sets
    torch.manual_seed(0)
    params = attach_network(parts, cfg, select_targets(parts, cfg).components())
    with torch.no_grad():
        for p in params:
            p.add_(torch.randn_like(p) * 0.2) if p.dim() > 1 else p.mul_(1 + 0.1 * torch.randn_like(p))
    return parts


# -- the published merge formulas (kohya / LyCORIS / ComfyUI), independent of lorakit -------------------------------

def delta(t: dict[str, torch.Tensor], shape: torch.Size) -> torch.Tensor:
    """ΔW of one module from its file tensors, scale alpha / dim included."""
    alpha = float(t["alpha"]) if "alpha" in t else None
    if "lora_up.weight" in t:  # LoRA / LoCon: up @ down, convs flattened
        up, down = t["lora_up.weight"], t["lora_down.weight"]
        return (up.flatten(1) @ down.flatten(1)).reshape(shape) * alpha / down.shape[0]
    if "hada_w1_a" in t:  # LoHa: (w1a @ w1b) ⊙ (w2a @ w2b)
        w = (t["hada_w1_a"] @ t["hada_w1_b"]) * (t["hada_w2_a"] @ t["hada_w2_b"])
        return w.reshape(shape) * alpha / t["hada_w1_b"].shape[0]
    dim = None  # LoKr: kron(w1, w2); scale alpha / dim only when a half is low-rank
    w1 = t.get("lokr_w1")
    if w1 is None:
        w1, dim = t["lokr_w1_a"] @ t["lokr_w1_b"], t["lokr_w1_b"].shape[0]
    w2 = t.get("lokr_w2")
    if w2 is None:
        w2, dim = t["lokr_w2_a"] @ t["lokr_w2_b"], t["lokr_w2_b"].shape[0]
    if w2.dim() == 4:
        w1 = w1[:, :, None, None]
    return torch.kron(w1, w2).reshape(shape) * (alpha / dim if dim else 1.0)


@torch.no_grad()
def merge_file(parts, path: Path, weight: float) -> None:
    """Merge a kohya/LyCORIS file into the model's weights: W + weight·ΔW; DoRA (dora_scale of shape (out, 1)):
    W_dora = dora_scale · (W + ΔW) / ‖W + ΔW‖ per output channel (LyCORIS wd_on_output), applied at a weight as
    W + weight·(W_dora − W) (ComfyUI `weight_decompose`, LyCORIS `scale = s·(scale − 1) + 1`)."""
    layers = formats.kohya_modules(parts)
    sd = load_file(str(path))
    names = {k.split(".")[0] for k in sd}
    for name in names:
        t = {k.split(".", 1)[1]: v.float() for k, v in sd.items() if k.split(".")[0] == name}
        w = layers[name].weight
        d = delta(t, w.shape)
        if "dora_scale" in t:
            assert t["dora_scale"].shape == (w.shape[0], *[1] * (w.dim() - 1))
            merged = w + d
            dora = t["dora_scale"] * merged / merged.flatten(1).norm(dim=1).reshape(t["dora_scale"].shape)
            w.copy_(w + weight * (dora - w))
        else:
            w.add_(weight * d)


@pytest.mark.parametrize("kind", list(KINDS))
@pytest.mark.parametrize("name", TINY)
def test_file_merged_by_the_formulas_equals_the_trained_model(name: str, kind: str, tmp_path: Path) -> None:
    parts = adapted(name, kind)
    base = load_model(ModelSection(pretrained_model_name_or_path=name))
    expected = unet_output(parts)
    assert (expected - unet_output(base)).abs().max() > 1e-3  # the network really changes the output
    if kind != "lora":  # LoCon-style networks adapt 3×3 convolutions, in the file as 4-d tensors
        unet = adapter_layers(parts.unet)
        assert any(getattr(layer.get_base_layer(), "kernel_size", (1, 1)) == (3, 3) for _, layer in unet.values())
    path = formats.save_kohya(tmp_path / "n.safetensors", formats.to_kohya(parts), {})

    merge_file(base, path, 1.0)
    assert (unet_output(base) - expected).abs().max() <= 1e-5
    if kind == "dora":
        return  # weight ≠ 1 means different things for DoRA in peft, LyCORIS and ComfyUI (docs/networks.md)
    half_base = load_model(ModelSection(pretrained_model_name_or_path=name))
    merge_file(half_base, path, 0.5)
    set_weight(parts, 0.5)
    half = unet_output(parts)
    assert (half - expected).abs().max() > 1e-4
    assert (unet_output(half_base) - half).abs().max() <= 1e-5


@pytest.mark.parametrize("kind", ["locon"])  # plain LoRA: test_formats.test_kohya_file_loads_in_diffusers_…
@pytest.mark.parametrize("name", TINY)
def test_lora_and_locon_files_load_in_diffusers(name: str, kind: str, tmp_path: Path) -> None:
    parts = adapted(name, kind)
    path = formats.save_kohya(tmp_path / "n.safetensors", formats.to_kohya(parts), {})
    fresh = load_model(ModelSection(pretrained_model_name_or_path=name))
    fresh.pipeline.load_lora_weights(str(path), adapter_name="loaded")
    assert (unet_output(fresh) - unet_output(parts)).abs().max() <= 1e-5


@pytest.mark.parametrize("kind", list(KINDS))
def test_file_to_peft_to_file_is_identical(kind: str, tmp_path: Path) -> None:
    parts = adapted("tiny-sd1", kind)
    meta_args = dict(name="x", resolution=(64, 64), steps=1, epochs=1, learning_rate=1e-4, te_trained=True, seed=1,
                     tag_frequency={}, num_images=1, created="2026-01-01T00:00:00+00:00")
    first = formats.save_kohya(tmp_path / "a.safetensors", formats.to_kohya(parts, torch.float16),
                               formats.kohya_metadata(parts, **meta_args))
    fresh = load_model(ModelSection(pretrained_model_name_or_path="tiny-sd1"))
    attach_file(fresh, load_file(str(first)))
    second = formats.save_kohya(tmp_path / "b.safetensors", formats.to_kohya(fresh, torch.float16),
                                formats.kohya_metadata(fresh, **meta_args))
    a, b = load_file(str(first)), load_file(str(second))
    assert a.keys() == b.keys() and all(a[k].dtype == b[k].dtype and torch.equal(a[k], b[k]) for k in a)
    with safe_open(str(first), "pt") as f1, safe_open(str(second), "pt") as f2:
        assert f1.metadata() == f2.metadata()
    # the tensor bytes after the header are identical (the header's JSON order is safetensors' own hash order)
    assert data_bytes(first) == data_bytes(second)


def data_bytes(path: Path) -> bytes:
    """A safetensors file's tensor data: everything after the 8-byte length and the JSON header."""
    blob = path.read_bytes()
    return blob[8 + int.from_bytes(blob[:8], "little"):]


@pytest.mark.parametrize("kind,module,args", [
    ("lora", "networks.lora", {}),
    ("locon", "networks.lora", {"conv_dim": "2", "conv_alpha": "3"}),
    ("loha", "lycoris.kohya", {"algo": "loha", "conv_dim": "2", "conv_alpha": "1"}),
    ("lokr", "lycoris.kohya", {"algo": "lokr", "conv_dim": "2", "conv_alpha": "1", "factor": "-1"}),
    ("dora", "lycoris.kohya", {"algo": "locon", "conv_dim": "2", "conv_alpha": "1", "dora_wd": "True",
                               "wd_on_output": "True"}),
])
def test_metadata_names_the_network_as_kohya_and_lycoris(kind: str, module: str, args: dict) -> None:
    meta = formats.kohya_metadata(adapted("tiny-sd1", kind, False), name="x", resolution=(64, 64), steps=1,
                                  epochs=1, learning_rate=1e-4, te_trained=False, seed=1, tag_frequency={},
                                  num_images=1, created="now")
    assert meta["ss_network_module"] == module
    assert json.loads(meta.get("ss_network_args", "{}")) == args
    # LoKr: rank 4 keeps both Kronecker halves of a 32-wide layer full, so the file states alpha = rank (scale 1),
    # as LyCORIS writes it; the trained alpha / rank is folded into w1
    assert (meta["ss_network_dim"], meta["ss_network_alpha"]) == ("4", "4.0" if kind == "lokr" else "2.0")


def test_metadata_writes_per_block_dims_as_kohya_users_pass_them(tmp_path: Path) -> None:
    """sd-scripts' train_network.py stores network_args as the user passed them ("block_dims": "0,0,0,0,8,…"). A
    tiny SD1 LoCon trained with block_dims / conv_block_dims writes the lists a kohya user passes for it, read
    from the trained modules: the same after the file is loaded into a fresh model."""
    dims, alphas, conv_dims, conv_alphas = [0] * 25, [2.0] * 25, [0] * 25, [3.0] * 25
    dims[4], dims[12] = 8, 2  # IN04 (down_blocks.1 layer 0), MID
    conv_dims[3], conv_dims[13] = 2, 4  # IN03 (the downsampler), OUT00 (up_blocks.0.resnets.0)
    conv_alphas[3] = 1.0
    parts = load_model(ModelSection(pretrained_model_name_or_path="tiny-sd1"))
    cfg = NetworkSection(network_module="locon", network_dim=4, network_alpha=2, conv_dim=4, conv_alpha=3,
                         target_modules=[], block_dims=dims, block_alphas=alphas, conv_block_dims=conv_dims,
                         conv_block_alphas=conv_alphas)
    attach_network(parts, cfg, select_targets(parts, cfg).components())
    meta_args = dict(name="x", resolution=(64, 64), steps=1, epochs=1, learning_rate=1e-4, te_trained=False,
                     seed=1, tag_frequency={}, num_images=1, created="now")
    meta = formats.kohya_metadata(parts, **meta_args)
    commas = lambda values: ",".join(f"{v:g}" for v in values)  # noqa: E731
    assert json.loads(meta["ss_network_args"]) == {
        "conv_dim": "4", "conv_alpha": "3", "block_dims": commas(dims), "block_alphas": commas(alphas),
        "conv_block_dims": commas(conv_dims), "conv_block_alphas": commas(conv_alphas)}
    path = formats.save_kohya(tmp_path / "n.safetensors", formats.to_kohya(parts), meta)
    assert "lora_unet_down_blocks_0_downsamplers_0_conv.alpha" in load_file(str(path))
    fresh = load_model(ModelSection(pretrained_model_name_or_path="tiny-sd1"))
    attach_file(fresh, load_file(str(path)))
    assert formats.kohya_metadata(fresh, **meta_args)["ss_network_args"] == meta["ss_network_args"]


def lycoris_file(parts) -> dict[str, torch.Tensor]:
    """A LyCORIS-layout file written from its documented keys: LoHa on two attention projections (alpha 2,
    rank 2), and the shapes LyCORIS gives them."""
    layers = formats.kohya_modules(parts)
    g = torch.Generator().manual_seed(5)
    sd = {}
    for name in ("lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q",
                 "lora_unet_up_blocks_1_attentions_0_transformer_blocks_0_attn2_to_out_0"):
        out_dim, in_dim = layers[name].weight.shape
        for k, shape in (("hada_w1_a", (out_dim, 2)), ("hada_w1_b", (2, in_dim)), ("hada_w2_a", (out_dim, 2)),
                         ("hada_w2_b", (2, in_dim))):
            sd[f"{name}.{k}"] = torch.randn(shape, generator=g) * 0.3
        sd[f"{name}.alpha"] = torch.tensor(2.0)
    return sd


def lokr_file(parts) -> dict[str, torch.Tensor]:
    """A LyCORIS LoKr file with both halves factorised (decompose_both, factor 4) and one full-matrix module
    (no rank: scale 1 whatever alpha says)."""
    layers = formats.kohya_modules(parts)
    g = torch.Generator().manual_seed(6)
    q = "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q"
    out_dim, in_dim = layers[q].weight.shape  # 32 × 32 in tiny-sd1: factor 4 -> (4, 8) × (4, 8)
    sd = {f"{q}.lokr_w1_a": torch.randn(4, 1, generator=g), f"{q}.lokr_w1_b": torch.randn(1, 4, generator=g),
          f"{q}.lokr_w2_a": torch.randn(out_dim // 4, 1, generator=g),
          f"{q}.lokr_w2_b": torch.randn(1, in_dim // 4, generator=g), f"{q}.alpha": torch.tensor(0.5)}
    k = "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_k"
    sd.update({f"{k}.lokr_w1": torch.randn(4, 4, generator=g) * 0.1,
               f"{k}.lokr_w2": torch.randn(out_dim // 4, in_dim // 4, generator=g) * 0.1,
               f"{k}.alpha": torch.tensor(8.0)})
    return sd


@pytest.mark.parametrize("make", [lycoris_file, lokr_file], ids=["loha", "lokr"])
def test_lycoris_layout_file_loads_and_matches_the_formulas(make, tmp_path: Path) -> None:
    model = load_model(ModelSection(pretrained_model_name_or_path="tiny-sd1"))
    sd = make(model)
    path = tmp_path / "lyco.safetensors"
    save_file(sd, str(path), {"ss_network_module": "lycoris.kohya"})
    attach_file(model, load_file(str(path)))
    merged = load_model(ModelSection(pretrained_model_name_or_path="tiny-sd1"))
    merge_file(merged, path, 1.0)
    assert (unet_output(model) - unet_output(merged)).abs().max() <= 1e-5
    assert (unet_output(merged) - unet_output(load_model(ModelSection(pretrained_model_name_or_path="tiny-sd1")))
            ).abs().max() > 1e-4


def test_a_key_no_rule_consumes_is_an_error_naming_it() -> None:
    parts = adapted("tiny-sd1", "lora", False)
    sd = formats.to_kohya(parts)
    name = next(iter(sd)).split(".")[0]
    sd[f"{name}.lora_mid.weight"] = torch.zeros(1)  # a LoCon Tucker middle: peft's LoRA has none
    with pytest.raises(LorakitError, match="lora_mid.weight"):
        attach_file(load_model(ModelSection(pretrained_model_name_or_path="tiny-sd1")), sd)


def test_input_axis_dora_is_refused() -> None:
    parts = adapted("tiny-sd1", "dora", False)
    sd = formats.to_kohya(parts)
    for k in [k for k in sd if k.endswith(".dora_scale") and sd[k].dim() == 2]:
        sd[k] = torch.ones(1, sd[k.replace("dora_scale", "lora_down.weight")].shape[1])  # (1, in): wd_on_output off
    with pytest.raises(LorakitError, match="per input channel"):
        attach_file(load_model(ModelSection(pretrained_model_name_or_path="tiny-sd1")), sd)


def test_aliases_and_refused_combinations() -> None:
    assert NetworkSection(network_module="lierla").network_module == "lora"
    assert NetworkSection(network_module="c3lier").network_module == "locon"
    with pytest.raises(ValueError, match="use_dora"):
        NetworkSection(network_module="loha", use_dora=True)


@pytest.mark.parametrize("kind", ["lora", "locon"])
@pytest.mark.parametrize("name", TINY)
def test_diffusers_folder_loads_with_load_lora_weights(name: str, kind: str, tmp_path: Path) -> None:
    parts = adapted(name, kind)
    folder = formats.save_peft(tmp_path / "n_peft", parts, torch.float32)
    keys = load_file(str(folder / "pytorch_lora_weights.safetensors")).keys()
    assert {k.split(".")[0] for k in keys} == {"unet", *parts.family.text_encoder_attrs}  # diffusers' prefixes
    fresh = load_model(ModelSection(pretrained_model_name_or_path=name))
    fresh.pipeline.load_lora_weights(str(folder), adapter_name="loaded")
    assert (unet_output(fresh) - unet_output(parts)).abs().max() <= 1e-5


@pytest.mark.parametrize("kind", ["loha", "lokr", "dora"])
def test_diffusers_folder_is_refused_where_diffusers_cannot_load_it(kind: str) -> None:
    from lorakit.errors import ConfigError

    with pytest.raises(ConfigError, match=f"for {kind} is not implemented yet"):
        formats.check_peft_format(adapted("tiny-sd1", kind, False))


@pytest.mark.parametrize("kind", list(KINDS))
def test_resume_loads_every_type_into_the_configured_network(kind: str, tmp_path: Path) -> None:
    """Resuming attaches the configured network, then copies the file in: LoKr's folded full halves included."""
    parts = adapted("tiny-sd1", kind)
    path = formats.save_kohya(tmp_path / "n.safetensors", formats.to_kohya(parts), {})
    fresh = load_model(ModelSection(pretrained_model_name_or_path="tiny-sd1"))
    cfg = NetworkSection(network_dim=4, network_alpha=2, train_text_encoder=True, target_modules=[],
                         text_encoder_target_modules=[], **KINDS[kind])
    attach_network(fresh, cfg, select_targets(fresh, cfg).components())
    assert formats.load_kohya_weights(fresh, path) == len(formats.read_state(parts))
    assert (unet_output(fresh) - unet_output(parts)).abs().max() <= 1e-5


@pytest.mark.parametrize("kind", ["loha", "lokr", "dora", "locon"])
@pytest.mark.parametrize("name", ["tiny-sd1", "tiny-sdxl"])
def test_generate_applies_every_type_at_its_weight(name: str, kind: str, tmp_path: Path) -> None:
    from lorakit.generate import apply_lora

    parts = adapted(name, kind)
    path = formats.save_kohya(tmp_path / "n.safetensors", formats.to_kohya(parts), {})
    for weight in (0.5, 0.0) if kind == "dora" else (0.5,):
        fresh = load_model(ModelSection(pretrained_model_name_or_path=name))
        apply_lora(fresh, path, weight)
        # the published formulas applied to the file at that weight (DoRA: the UIs' interpolation)
        expected = load_model(ModelSection(pretrained_model_name_or_path=name))
        merge_file(expected, path, weight)
        assert (unet_output(fresh) - unet_output(expected)).abs().max() <= 1e-5, weight
    if kind == "dora":  # weight 0 is the base model, as in ComfyUI and LyCORIS
        base = load_model(ModelSection(pretrained_model_name_or_path=name))
        assert (unet_output(fresh) - unet_output(base)).abs().max() <= 1e-6


def test_network_findings_refuse_what_is_not_implemented() -> None:
    from lorakit.config.schema import LorakitConfig
    from lorakit.networks.findings import network_findings

    cfg = LorakitConfig.model_validate({"network": {"network_module": "lokr", "network_dropout": 0.1},
                                        "output": {"save_format": "both"}})
    assert [(f.key, "not implemented yet" in f.message) for f in network_findings(cfg)] == [
        ("output.save_format", True), ("network.network_dropout", False)]
    assert network_findings(LorakitConfig.model_validate({"network": {"network_module": "locon"},
                                                          "output": {"save_format": "peft"}})) == []
