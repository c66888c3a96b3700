"""Target selection against module sets written out from kohya's, TrainTrain's and LyCORIS's rules.

Full-size SD1.5 and SDXL are built on the meta device from the shipped configs (no weights); the tiny models as
built. Every expected set below is spelled out from the architecture (diffusers paths) and the rules, never read
from the code under test.
"""

from __future__ import annotations

from functools import lru_cache

import pytest
from pydantic import ValidationError

from lorakit.config.schema import LorakitConfig, ModelSection, NetworkSection
from lorakit.errors import ConfigError
from lorakit.networks.targets import (FAMILY_BLOCKS, block_names_for, canonical_block, kohya_block_args,
                                      kohya_block_layout, model_skeleton, select_targets, selection_findings)

TRANSFORMER = ["proj_in", "proj_out", *[f"transformer_blocks.{{t}}.{a}.{p}" for a in ("attn1", "attn2")
                                         for p in ("to_q", "to_k", "to_v", "to_out.0")],
               "transformer_blocks.{t}.ff.net.0.proj", "transformer_blocks.{t}.ff.net.2"]


@lru_cache(maxsize=None)
def skeleton(model: str):
    return model_skeleton(ModelSection(pretrained_model_name_or_path=model))


def attn(prefix: str, layers: int = 1, which: str = "attn2") -> set[str]:
    """The q/k/v/out projections of one attention kind in every transformer layer of a Transformer2DModel."""
    return {f"{prefix}.transformer_blocks.{t}.{which}.{p}" for t in range(layers)
            for p in ("to_q", "to_k", "to_v", "to_out.0")}


def transformer(prefix: str, layers: int = 1) -> set[str]:
    """Every Linear/1×1 layer kohya adapts in a Transformer2DModel: proj_in/out, attn1/attn2, ff."""
    out = {f"{prefix}.proj_in", f"{prefix}.proj_out"}
    for t in range(layers):
        out |= attn(prefix, t + 1, "attn1") | attn(prefix, t + 1, "attn2")
        out |= {f"{prefix}.transformer_blocks.{t}.ff.net.0.proj", f"{prefix}.transformer_blocks.{t}.ff.net.2"}
    return out


def resnet(prefix: str, shortcut: bool) -> tuple[set[str], set[str]]:
    """(Linear/1×1 layers, 3×3 convolutions) of a ResnetBlock2D."""
    return {f"{prefix}.time_emb_proj"} | ({f"{prefix}.conv_shortcut"} if shortcut else set()), \
        {f"{prefix}.conv1", f"{prefix}.conv2"}


def clip(layers: int, suffixes=("q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2"), prefix: str = "") -> set[str]:
    """kohya's text-encoder targets: CLIPAttention's and CLIPMLP's Linear layers (transformers 5 keeps the
    `text_model.` level only in CLIPTextModelWithProjection, SDXL's second encoder)."""
    where = {"q_proj": "self_attn", "k_proj": "self_attn", "v_proj": "self_attn", "out_proj": "self_attn",
             "fc1": "mlp", "fc2": "mlp"}
    return {f"{prefix}encoder.layers.{i}.{where[s]}.{s}" for i in range(layers) for s in suffixes}


def net(**kw) -> NetworkSection:
    """A network config with kohya's full module sets unless the test names suffixes."""
    kw.setdefault("target_modules", [])
    kw.setdefault("text_encoder_target_modules", [])
    return NetworkSection(network_dim=16, network_alpha=8, **kw)


def ranks(paths: set[str], rank: int, alpha: float) -> dict[str, tuple[int, float]]:
    return {p: (rank, alpha) for p in paths}


def convs_by_slot(downs: int, samplers: int, down_resnets: int = 2) -> dict[int, set[str]]:
    """The 3×3 convolutions of a diffusers UNet by sd-scripts' SD1/SD2 `get_block_index`: down_blocks.i.resnets.j
    → 1 + 3i + j, its downsampler → 1 + 3i + 2, the mid block → 12, up_blocks.i.resnets.j → 13 + 3i + j, its
    upsampler → 13 + 3i + 2. `samplers`: how many levels (from the top) have a down/upsampler."""
    out: dict[int, set[str]] = {}
    for i in range(downs):
        for j in range(down_resnets):
            out.setdefault(1 + 3 * i + j, set()).update(resnet(f"down_blocks.{i}.resnets.{j}", False)[1])
        for j in range(3):
            out.setdefault(13 + 3 * i + j, set()).update(resnet(f"up_blocks.{i}.resnets.{j}", False)[1])
    for i in range(samplers):
        out[1 + 3 * i + 2] = out.get(1 + 3 * i + 2, set()) | {f"down_blocks.{i}.downsamplers.0.conv"}
        out[13 + 3 * i + 2] |= {f"up_blocks.{i}.upsamplers.0.conv"}
    out[12] = resnet("mid_block.resnets.0", False)[1] | resnet("mid_block.resnets.1", False)[1]
    return out


def commas(values: list) -> str:
    """A per-block list as sd-scripts users pass it in network_args ("0,8,0,…")."""
    return ",".join(f"{v:g}" for v in values)


# -- SD1.5 (full size, meta device) ---------------------------------------------------------------------------------

SD1_ATTN_DOWN = [f"down_blocks.{i}.attentions.{j}" for i in range(3) for j in range(2)]
SD1_ATTN_UP = [f"up_blocks.{i}.attentions.{j}" for i in range(1, 4) for j in range(3)]


def test_sd15_plain_lora_is_kohyas_192_plus_72() -> None:
    expected = set().union(*(transformer(p) for p in SD1_ATTN_DOWN + SD1_ATTN_UP + ["mid_block.attentions.0"]))
    plan = select_targets(skeleton("random-sd15"), net(train_text_encoder=True))
    assert plan.unet == ranks(expected, 16, 8) and len(expected) == 192
    assert plan.text_encoders == [ranks(clip(12), 16, 8)] and len(clip(12)) == 72


def test_sd15_blocks_and_cross_attention() -> None:
    """IN04 = input_blocks.4 = down_blocks.1 layer 0; OUT11 = output_blocks.11 = up_blocks.3 layer 2."""
    plan = select_targets(skeleton("random-sd15"), net(blocks=["IN04", "OUT11"], network_element="cross_attention"))
    assert set(plan.unet) == attn("down_blocks.1.attentions.0") | attn("up_blocks.3.attentions.2")
    assert plan.text_encoders == [{}]
    plan = select_targets(skeleton("random-sd15"), net(blocks=["MID"], network_element="self_attention"))
    assert set(plan.unet) == attn("mid_block.attentions.0", which="attn1")


def test_sd15_locon_adds_resnets_and_samplers_at_conv_rank() -> None:
    cfg = net(network_module="locon", conv_dim=4, conv_alpha=2, blocks=["IN03", "IN04", "OUT02"])
    lin4, conv4 = resnet("down_blocks.1.resnets.0", shortcut=True)  # 320 → 640 channels
    lin_o2, conv_o2 = resnet("up_blocks.0.resnets.2", shortcut=True)  # skip connections concatenate channels
    expected = {**ranks(transformer("down_blocks.1.attentions.0") | lin4 | lin_o2, 16, 8),
                **ranks(conv4 | conv_o2 | {"down_blocks.0.downsamplers.0.conv", "up_blocks.0.upsamplers.0.conv"},
                        4, 2)}
    assert select_targets(skeleton("random-sd15"), cfg).unet == expected


def test_sd15_locon_counts_and_conv_defaults() -> None:
    """kohya's LoCon on SD1.5 builds 278 UNet modules; conv_dim/alpha 0 fall back to the network's."""
    plan = select_targets(skeleton("random-sd15"), net(network_module="locon", conv_dim=0, conv_alpha=0))
    assert len(plan.unet) == 278
    assert plan.unet["mid_block.resnets.1.conv2"] == (16, 8)


def test_sd15_block_dims_with_zeros() -> None:
    dims = [0] * 25
    dims[4], dims[12] = 8, 4  # IN04, MID
    alphas = [1.0] * 25
    alphas[12] = 2.0
    plan = select_targets(skeleton("random-sd15"), net(network_module="locon", block_dims=dims, block_alphas=alphas))
    lin, conv = resnet("down_blocks.1.resnets.0", shortcut=True)
    mid = [resnet(f"mid_block.resnets.{i}", shortcut=False) for i in range(2)]
    every_conv = set().union(*convs_by_slot(4, 3).values())
    expected = {**ranks(transformer("down_blocks.1.attentions.0") | lin, 8, 1.0),
                **ranks(transformer("mid_block.attentions.0") | mid[0][0] | mid[1][0], 4, 2.0),
                **ranks(every_conv, 16, 8)}  # sd-scripts: without conv_block_dims every block's convs get conv_dim
    assert plan.unet == expected and len(every_conv) == 50


def test_sd15_conv_block_dims() -> None:
    """sd-scripts `create_modules` with block_dims + conv_block_dims: 3×3 convs take conv_block_dims/alphas per
    block (0 = not trained), Linear/1×1 layers block_dims (block_alphas unset = network_alpha)."""
    dims, conv_dims, conv_alphas = [0] * 25, [0] * 25, [3.0] * 25
    dims[4] = 8  # IN04: down_blocks.1 layer 0
    conv_dims[3], conv_dims[12], conv_dims[15] = 2, 6, 3  # IN03 (downsampler), MID, OUT02 (resnet + upsampler)
    conv_alphas[3], conv_alphas[15] = 1.0, 0.5  # an untrained block's alpha is moot; the file writes the common one
    cfg = net(network_module="locon", conv_dim=4, conv_alpha=1, block_dims=dims, conv_block_dims=conv_dims,
              conv_block_alphas=conv_alphas)
    plan = select_targets(skeleton("random-sd15"), cfg)
    convs = convs_by_slot(4, 3)
    assert convs[3] == {"down_blocks.0.downsamplers.0.conv"}
    assert convs[15] == {"up_blocks.0.resnets.2.conv1", "up_blocks.0.resnets.2.conv2", "up_blocks.0.upsamplers.0.conv"}
    lin, _ = resnet("down_blocks.1.resnets.0", shortcut=True)
    expected = {**ranks(transformer("down_blocks.1.attentions.0") | lin, 8, 8), **ranks(convs[3], 2, 1.0),
                **ranks(convs[12], 6, 3.0), **ranks(convs[15], 3, 0.5)}
    assert plan.unet == expected
    # the saved file's network args: what a kohya user passes for this network (block_alphas = network_alpha)
    assert kohya_block_args(skeleton("random-sd15"), plan.unet) == {
        "block_dims": commas(dims), "block_alphas": commas([8] * 25), "conv_block_dims": commas(conv_dims),
        "conv_block_alphas": commas(conv_alphas)}
    # conv_block_alphas unset: conv_alpha in every block (sd-scripts' default; lorakit's conv_alpha unset =
    # network_alpha)
    plan = select_targets(skeleton("random-sd15"), net(network_module="locon", conv_alpha=5, block_dims=[16] * 25,
                                                       conv_block_dims=conv_dims))
    assert {p: v for p, v in plan.unet.items() if p in convs[12]} == ranks(convs[12], 6, 5)
    # IN00 (conv_in) and the downsampler blocks IN03/IN06/IN09 hold no Linear/1×1 layer: written as 0, untrained
    assert kohya_block_args(skeleton("random-sd15"), plan.unet) == {
        "block_dims": commas([0 if i in (0, 3, 6, 9) else 16 for i in range(25)]),
        "block_alphas": commas([8] * 25), "conv_block_dims": commas(conv_dims), "conv_block_alphas": commas([5] * 25)}


def test_block_args_stay_out_when_every_block_is_alike() -> None:
    """A network sd-scripts builds without per-block lists writes none; zero blocks of plain LoRA do."""
    info = skeleton("random-sd15")
    assert kohya_block_args(info, select_targets(info, net(network_module="locon")).unet) == {}
    assert kohya_block_args(info, select_targets(info, net(network_element="cross_attention")).unet) == {}
    dims = [0] * 25
    dims[12] = 4
    plan = select_targets(info, net(block_dims=dims))
    assert kohya_block_args(info, plan.unet) == {"block_dims": commas(dims), "block_alphas": commas([8] * 25)}


def test_base_only_trains_the_text_encoders() -> None:
    plan = select_targets(skeleton("random-sd15"), net(blocks=["BASE"], train_text_encoder=True))
    assert plan.unet == {} and plan.text_encoders == [ranks(clip(12), 16, 8)]
    plan = select_targets(skeleton("random-sdxl"), net(blocks=["base"], train_text_encoder=True,
                                                       text_encoder_target_modules=["q_proj", "v_proj"]))
    assert plan.unet == {}
    assert [set(t) for t in plan.text_encoders] == [clip(12, ("q_proj", "v_proj")), clip(32, ("q_proj", "v_proj"), "text_model.")]
    assert plan.components().keys() == {"unet", "text_encoder", "text_encoder_2"}


def test_suffix_filters_as_before() -> None:
    """target_modules, when given, is the old suffix match over every Linear/Conv2d, narrowed by the rest."""
    plan = select_targets(skeleton("random-sd15"), net(target_modules=["to_k", "conv_in"], blocks=["IN00", "IN01"]))
    assert set(plan.unet) == {"conv_in", "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_k",
                              "down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k"}
    with pytest.raises(ConfigError, match=r"target_modules: no module matches \['to_x'\]"):
        select_targets(skeleton("random-sd15"), net(target_modules=["to_q", "to_x"]))


# -- SDXL (full size, meta device) ----------------------------------------------------------------------------------

XL_LAYERS = {"down_blocks.1": 2, "down_blocks.2": 10, "mid_block": 10, "up_blocks.0": 10, "up_blocks.1": 2}


def xl_transformers() -> set[str]:
    out = set()
    for j in range(2):
        out |= transformer(f"down_blocks.1.attentions.{j}", 2) | transformer(f"down_blocks.2.attentions.{j}", 10)
    for j in range(3):
        out |= transformer(f"up_blocks.0.attentions.{j}", 10) | transformer(f"up_blocks.1.attentions.{j}", 2)
    return out | transformer("mid_block.attentions.0", 10)


def test_sdxl_plain_lora_is_kohyas_722_plus_264() -> None:
    plan = select_targets(skeleton("random-sdxl"), net(train_text_encoder=True))
    assert plan.unet == ranks(xl_transformers(), 16, 8) and len(plan.unet) == 722
    assert plan.text_encoders == [ranks(clip(12), 16, 8), ranks(clip(32, prefix="text_model."), 16, 8)]


def test_sdxl_blocks_and_elements() -> None:
    """SDXL IN04 = input_blocks.4 = down_blocks.1 layer 0 (2 transformer layers); OUT00 = up_blocks.0 layer 0
    (10 layers); OUT08 = up_blocks.2 layer 2, which has no attention."""
    plan = select_targets(skeleton("random-sdxl"),
                          net(blocks=["IN04", "OUT00", "OUT08"], network_element="cross_attention"))
    assert set(plan.unet) == attn("down_blocks.1.attentions.0", 2) | attn("up_blocks.0.attentions.0", 10)
    plan = select_targets(skeleton("random-sdxl"), net(network_module="lokr", blocks=["OUT08", "IN03"]))
    lin, conv = resnet("up_blocks.2.resnets.2", shortcut=True)
    assert plan.unet == {**ranks(lin, 16, 8), **ranks(conv | {"down_blocks.0.downsamplers.0.conv"}, 16, 8)}


def test_sdxl_block_dims_use_kohyas_23_slots() -> None:
    """sd-scripts' SDXL order: time_embed, IN00–IN08, middle_block.0/.1/.2 (resnet, attention, resnet), OUT00–08,
    out. Slot 11 is the middle block's attention, slot 10 its first resnet."""
    dims = [0] * 23
    dims[11] = 8
    plan = select_targets(skeleton("random-sdxl"), net(block_dims=dims))
    assert plan.unet == ranks(transformer("mid_block.attentions.0", 10), 8, 8)
    dims = [0] * 23
    dims[10] = 4
    alphas = [3.0] * 23
    plan = select_targets(skeleton("random-sdxl"), net(network_module="locon", conv_dim=2, conv_alpha=1,
                                                       block_dims=dims, block_alphas=alphas))
    lin, _ = resnet("mid_block.resnets.0", shortcut=False)
    convs = {f"down_blocks.{i}.downsamplers.0.conv" for i in range(2)} | \
        {f"up_blocks.{i}.upsamplers.0.conv" for i in range(2)} | {
        c for prefix in [f"down_blocks.{i}.resnets.{j}" for i in range(3) for j in range(2)]
        + [f"up_blocks.{i}.resnets.{j}" for i in range(3) for j in range(3)] + ["mid_block.resnets.0",
                                                                               "mid_block.resnets.1"]
        for c in resnet(prefix, False)[1]}
    assert plan.unet == {**ranks(lin, 4, 3.0), **ranks(convs, 2, 1)} and len(convs) == 38  # every block's convs
    conv_dims = [0] * 23
    conv_dims[12] = 6  # middle_block.2: the second resnet
    plan = select_targets(skeleton("random-sdxl"), net(network_module="locon", conv_dim=2, conv_alpha=1,
                                                       block_dims=dims, conv_block_dims=conv_dims))
    assert plan.unet == {**ranks(lin, 4, 8), **ranks(resnet("mid_block.resnets.1", False)[1], 6, 1)}


# -- tiny models (as built) -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("model,layers", [("tiny-sd1", (1, 1)), ("tiny-sd2-v", (1, 1)), ("tiny-sdxl", (1, 2))])
def test_tiny_blocks_and_elements(model: str, layers: tuple[int, int]) -> None:
    """Tiny UNets: two levels of two resnets (+ attention); IN03 is the downsampler, OUT02 holds the upsampler.
    `layers`: transformer layers of the (first, second) down level; up levels mirror them (up_blocks.0 = deepest)."""
    cfg = net(blocks=["IN04", "OUT05"], network_element="cross_attention")
    assert set(select_targets(skeleton(model), cfg).unet) == \
        attn("down_blocks.1.attentions.0", layers[1]) | attn("up_blocks.1.attentions.2", layers[0])
    plan = select_targets(skeleton(model), net(network_module="loha", blocks=["IN03", "OUT02"]))
    lin, conv = resnet("up_blocks.0.resnets.2", shortcut=True)
    assert set(plan.unet) == transformer("up_blocks.0.attentions.2", layers[1]) | lin | conv | {
        "down_blocks.0.downsamplers.0.conv", "up_blocks.0.upsamplers.0.conv"}


def test_tiny_block_dims_follow_the_full_size_layout() -> None:
    """A tiny model's blocks sit in the first slots of its family's kohya layout (SD1: IN04 is slot 4; SDXL: 5)."""
    dims = [0] * 25
    dims[4] = 2
    assert select_targets(skeleton("tiny-sd1"), net(block_dims=dims)).unet == \
        ranks(transformer("down_blocks.1.attentions.0"), 2, 8)
    dims = [0] * 23
    dims[5] = 2
    assert select_targets(skeleton("tiny-sdxl"), net(block_dims=dims)).unet == \
        ranks(transformer("down_blocks.1.attentions.0", 2), 2, 8)


def test_tiny_conv_block_dims() -> None:
    """Tiny SD1: two levels, a downsampler in down_blocks.0 (IN03) and an upsampler in up_blocks.0 (OUT02); slots
    as in the full-size layout. Linear layers all at 0, convs only where conv_block_dims says."""
    convs = convs_by_slot(2, 1)
    conv_dims = [0] * 25
    conv_dims[3], conv_dims[16] = 2, 4  # IN03, OUT03 (up_blocks.1.resnets.0)
    plan = select_targets(skeleton("tiny-sd1"), net(network_module="loha", block_dims=[0] * 25,
                                                    conv_block_dims=conv_dims))
    assert convs[16] == {"up_blocks.1.resnets.0.conv1", "up_blocks.1.resnets.0.conv2"}
    assert plan.unet == {**ranks(convs[3], 2, 8), **ranks(convs[16], 4, 8)}


# -- validation ---------------------------------------------------------------------------------------------------------

def test_block_spellings_and_bad_names() -> None:
    assert NetworkSection(blocks=["in4", "M00", "base", "OUT11"]).blocks == ["IN04", "MID", "BASE", "OUT11"]
    assert NetworkSection(network_element="CrossAttention").network_element == "cross_attention"
    assert canonical_block("mid") == "MID"
    with pytest.raises(ValidationError, match="IN4X: not a block name"):
        NetworkSection(blocks=["IN4x"])
    with pytest.raises(ValidationError, match="block dim is 0"):
        NetworkSection(block_dims=[2000])
    with pytest.raises(ValidationError, match="block dim is 0"):
        NetworkSection(conv_block_dims=[-1])
    with pytest.raises(ValidationError, match="block alpha must be > 0"):
        NetworkSection(conv_block_alphas=[0.0])
    with pytest.raises(ConfigError, match="IN09, OUT10: not a block of sdxl; valid: BASE, IN00–IN08, MID, "
                                          "OUT00–OUT08"):
        select_targets(skeleton("tiny-sdxl"), net(blocks=["IN09", "OUT10"]))


def test_block_dims_length_names_the_count() -> None:
    with pytest.raises(ConfigError, match="block_dims: has 25 values; sdxl needs 23"):
        select_targets(skeleton("tiny-sdxl"), net(block_dims=[4] * 25))
    with pytest.raises(ConfigError, match="block_alphas: has 23 values; sd1 needs 25"):
        select_targets(skeleton("tiny-sd1"), net(block_dims=[4] * 25, block_alphas=[4.0] * 23))
    with pytest.raises(ConfigError, match="conv_block_dims: has 25 values; sdxl needs 23"):
        select_targets(skeleton("tiny-sdxl"), net(network_module="locon", block_dims=[4] * 23,
                                                  conv_block_dims=[4] * 25))
    with pytest.raises(ConfigError, match="conv_block_alphas: has 23 values; sd1 needs 25"):
        select_targets(skeleton("tiny-sd1"), net(network_module="locon", block_dims=[4] * 25,
                                                 conv_block_dims=[4] * 25, conv_block_alphas=[1.0] * 23))


def test_nothing_selected_is_an_error() -> None:
    with pytest.raises(ConfigError, match="no module is selected"):
        select_targets(skeleton("tiny-sd1"), net(blocks=["IN03"]))  # a downsampler: only LoCon adapts it


def findings(**network) -> dict[str, str]:
    cfg = LorakitConfig.model_validate({"model": {"pretrained_model_name_or_path": network.pop("model", "tiny-sd1")},
                                        "network": network})
    return {f.key: f.message for f in selection_findings(cfg)}


def test_selection_findings_without_loading() -> None:
    assert findings() == {}
    assert "does not work with network_module 'loha'" in findings(network_module="loha",
                                                                   network_element="self_attention")[
        "network.network_element"]
    assert "adapts no 3×3 convolutions; use network_module = 'locon'" in findings(conv_dim=4)["network.conv_dim"]
    assert "train_text_encoder is false" in findings(blocks=["BASE"])["network.blocks"]
    assert "does not list BASE" in findings(blocks=["IN01"], train_text_encoder=True)["network.blocks"]
    assert findings(model="tiny-sdxl", blocks=["IN11"])["network.blocks"].startswith("IN11: not a block of sdxl")
    assert findings(model="random-sd15", block_dims=[1] * 23)["network.block_dims"].startswith(
        "has 23 values; sd1 needs 25")
    assert findings(model="/nowhere/model.safetensors", blocks=["IN11"]) == {}  # family unknown: any family's name
    assert findings(model="random-sdxl", network_module="locon", block_dims=[1] * 23, conv_block_dims=[1] * 25)[
        "network.conv_block_dims"].startswith("has 25 values; sdxl needs 23")


def test_per_block_lists_that_sd_scripts_ignores_alone_are_refused() -> None:
    """sd-scripts `create_network` reads block_alphas and the conv lists only with block_dims, and
    `get_block_dims_and_alphas` reads conv_block_alphas only with conv_block_dims."""
    assert findings(block_alphas=[1.0] * 25)["network.block_alphas"].startswith(
        "is set without block_dims: sd-scripts reads block_alphas only together with block_dims")
    assert "without block_dims" in findings(network_module="locon", conv_block_dims=[1] * 25)[
        "network.conv_block_dims"]
    assert "without conv_block_dims" in findings(network_module="locon", block_dims=[1] * 25,
                                                 conv_block_alphas=[1.0] * 25)["network.conv_block_alphas"]
    assert "adapts no 3×3 convolutions" in findings(block_dims=[1] * 25, conv_block_dims=[1] * 25)[
        "network.conv_block_dims"]


def test_family_table_matches_the_families() -> None:
    from lorakit.families import FAMILIES

    for name, family in FAMILIES.items():
        count, sgm = FAMILY_BLOCKS[name]
        assert family.block_names() == block_names_for(count)
        assert family.kohya_sgm_names == sgm
    assert len(kohya_block_layout(block_names_for(12), False)) == 25
    assert len(kohya_block_layout(block_names_for(9), True)) == 23
