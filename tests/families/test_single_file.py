"""Single-file checkpoints: detection, offline loading through diffusers, shipped configs and tokenizer."""

from __future__ import annotations

import json
import os
import shutil

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from pathlib import Path

import pytest
import torch
from accelerate import init_empty_weights
from diffusers import (
    AutoencoderKL,
    DDIMScheduler,
    StableDiffusionPipeline,
    StableDiffusionXLPipeline,
    UNet2DConditionModel,
)
from safetensors.torch import save_file
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

from lorakit.errors import ModelError
from lorakit.families import single_file as sf

from .clip_bpe import vocab_from_merges
from .ldm_checkpoint import vae_to_ldm, write_single_file

# -- tiny models --------------------------------------------------------------------------------------------------


def tiny_tokenizer(max_length: int = 16, pad: str = "<|endoftext|>") -> CLIPTokenizer:
    """A CLIP tokenizer over a 54-token vocabulary (letters, letters + </w>, the two special tokens)."""
    letters = "abcdefghijklmnopqrstuvwxyz"
    tokens = [*letters, *(c + "</w>" for c in letters), "<|startoftext|>", "<|endoftext|>"]
    vocab = {t: i for i, t in enumerate(tokens)}
    return CLIPTokenizer(vocab=vocab, merges=[], model_max_length=max_length, pad_token=pad)


def tiny_text_config(hidden: int, act: str = "quick_gelu", **extra) -> CLIPTextConfig:
    return CLIPTextConfig(
        hidden_size=hidden, intermediate_size=2 * hidden, num_attention_heads=4, num_hidden_layers=2,
        vocab_size=1000, max_position_embeddings=16, bos_token_id=52, eos_token_id=53, pad_token_id=53,
        hidden_act=act, **extra,
    )  # fmt: skip


def tiny_vae(seed: int) -> AutoencoderKL:
    torch.manual_seed(seed)
    return AutoencoderKL(
        block_out_channels=(8, 16), in_channels=3, out_channels=3, latent_channels=4, norm_num_groups=4,
        down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2, sample_size=32,
    )  # fmt: skip


def tiny_unet(**cfg) -> UNet2DConditionModel:
    base = dict(
        block_out_channels=(32, 64), layers_per_block=2, sample_size=32, in_channels=4, out_channels=4,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=32, attention_head_dim=8, norm_num_groups=8,
    )  # fmt: skip
    return UNet2DConditionModel(**{**base, **cfg})


def randomize(*modules: torch.nn.Module) -> None:
    """Fill every parameter with distinct random values (zero-initialised layers would hide swapped keys)."""
    with torch.no_grad():
        for module in modules:
            for p in module.parameters():
                p.copy_(torch.randn_like(p))


def tiny_scheduler() -> DDIMScheduler:
    return DDIMScheduler(
        beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, clip_sample=False, steps_offset=1
    )


def tiny_sd_pipeline(family: str, seed: int = 0) -> StableDiffusionPipeline:
    torch.manual_seed(seed)
    if family == "sd1":
        unet, text_encoder, pad = tiny_unet(), CLIPTextModel(tiny_text_config(32)), "<|endoftext|>"
    else:
        unet = tiny_unet(use_linear_projection=True, attention_head_dim=(2, 4), upcast_attention=True)
        text_encoder, pad = CLIPTextModel(tiny_text_config(32, act="gelu")), "!"
    vae = tiny_vae(seed)
    randomize(unet, vae, text_encoder)
    scheduler = tiny_scheduler()
    return StableDiffusionPipeline(
        vae=vae, text_encoder=text_encoder, tokenizer=tiny_tokenizer(pad=pad), unet=unet, scheduler=scheduler,
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )  # fmt: skip


def tiny_sdxl_pipeline(seed: int = 0) -> StableDiffusionXLPipeline:
    torch.manual_seed(seed)
    # The two text encoders differ in width: diffusers tells them apart by their embedding size, as in real SDXL.
    text_encoder = CLIPTextModel(tiny_text_config(32))
    text_encoder_2 = CLIPTextModelWithProjection(tiny_text_config(64, act="gelu", projection_dim=64))
    unet = tiny_unet(
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        transformer_layers_per_block=(1, 2), attention_head_dim=(2, 4), use_linear_projection=True,
        cross_attention_dim=96, addition_embed_type="text_time", addition_time_embed_dim=8,
        projection_class_embeddings_input_dim=8 * 6 + 64,
    )  # fmt: skip
    vae = tiny_vae(seed)
    randomize(unet, vae, text_encoder, text_encoder_2)
    scheduler = tiny_scheduler()
    return StableDiffusionXLPipeline(
        vae=vae, text_encoder=text_encoder, text_encoder_2=text_encoder_2, tokenizer=tiny_tokenizer(),
        tokenizer_2=tiny_tokenizer(pad="!"), unet=unet, scheduler=scheduler,
    )  # fmt: skip


@pytest.fixture(scope="module")
def sd1_files(tmp_path_factory) -> tuple[StableDiffusionPipeline, Path, Path]:
    """The tiny SD1 pipeline, its diffusers folder (the config) and its single-file checkpoint."""
    tmp = tmp_path_factory.mktemp("sd1")
    pipe = tiny_sd_pipeline("sd1")
    return pipe, save_configs_only(pipe, tmp / "config"), write_single_file(pipe, "sd1", tmp / "tiny-sd1.safetensors")


def save_configs_only(pipe, folder: Path) -> Path:
    """`save_pretrained`, then delete the weight files: a config folder like the shipped ones, so every tensor
    a test sees after loading must have come from the single file."""
    pipe.save_pretrained(folder)
    weights = list(folder.glob("*/*.safetensors"))
    assert weights
    for f in weights:
        f.unlink()
    return folder


def assert_same_weights(loaded: torch.nn.Module, original: torch.nn.Module) -> None:
    got, want = loaded.state_dict(), original.state_dict()
    assert sorted(got) == sorted(want)
    differing = [k for k in want if not torch.equal(got[k], want[k])]
    assert not differing, differing[:5]


def header_file(path: Path, names: list[str], metadata: dict[str, str] | None = None) -> Path:
    """A `.safetensors` file with the given tensor names (1-element tensors): enough for header-only detection."""
    save_file({n: torch.zeros(1) for n in names}, str(path), metadata=metadata)
    return path


# -- round trips through diffusers' from_single_file -------------------------------------------------------------


def test_sd1_single_file_loads_every_tensor_exactly(sd1_files):
    pipe, config_dir, ckpt = sd1_files
    loaded = sf.load_single_file(ckpt, "sd1", None, torch.float32, config_dir=config_dir)
    assert isinstance(loaded, StableDiffusionPipeline)
    for name in ("unet", "vae", "text_encoder"):
        assert_same_weights(getattr(loaded, name), getattr(pipe, name))
    assert loaded.tokenizer.get_vocab() == pipe.tokenizer.get_vocab()
    assert loaded.tokenizer("a cab").input_ids == [52, 26, 2, 0, 27, 53]
    assert type(loaded.scheduler) is DDIMScheduler and loaded.scheduler.config.prediction_type == "epsilon"


@pytest.mark.parametrize("family", ["sd2", "sdxl"])
def test_sd2_and_sdxl_single_files_load_every_tensor_exactly(family, tmp_path):
    pipe = tiny_sdxl_pipeline() if family == "sdxl" else tiny_sd_pipeline("sd2")
    config_dir = save_configs_only(pipe, tmp_path / "config")
    ckpt = write_single_file(pipe, family, tmp_path / f"tiny-{family}.safetensors")
    assert sf.detect_family(ckpt) == family
    loaded = sf.load_single_file(ckpt, family, None, torch.float32, config_dir=config_dir)
    assert type(loaded) is type(pipe)
    for name in ("unet", "vae", "text_encoder", "text_encoder_2")[: 4 if family == "sdxl" else 3]:
        assert_same_weights(getattr(loaded, name), getattr(pipe, name))
    if family == "sdxl":
        assert loaded.tokenizer_2.pad_token == "!" and loaded.tokenizer.pad_token == "<|endoftext|>"


@pytest.mark.parametrize(
    ("arch", "family", "scheduler", "prediction"),
    [
        ("sd15", "sd1", "PNDMScheduler", "epsilon"),
        ("sd21-v", "sd2", "DDIMScheduler", "v_prediction"),
        ("sdxl-base", "sdxl", "EulerDiscreteScheduler", "epsilon"),
    ],
)
def test_shipped_config_folder_drives_the_load(arch, family, scheduler, prediction, tmp_path):
    """The shipped folder with only the model sizes swapped for tiny ones: its model_index, scheduler and
    tokenizers (shared CLIP vocabulary, per-folder pad token) are what the pipeline ends up with."""
    pipe = tiny_sdxl_pipeline() if family == "sdxl" else tiny_sd_pipeline(family)
    tiny = save_configs_only(pipe, tmp_path / "tiny")
    config_dir = shutil.copytree(sf.shipped_config(arch), tmp_path / arch)
    models = ["unet", "vae", "text_encoder", *(["text_encoder_2"] if family == "sdxl" else [])]
    for name in models:
        shutil.copy(tiny / name / "config.json", config_dir / name / "config.json")
    ckpt = write_single_file(pipe, family, tmp_path / "model.safetensors")
    loaded = sf.load_single_file(ckpt, family, None, config_dir=config_dir)
    for name in models:
        assert_same_weights(getattr(loaded, name), getattr(pipe, name))
    assert type(loaded.scheduler).__name__ == scheduler and loaded.scheduler.config.prediction_type == prediction
    tokenizers = [loaded.tokenizer, *([loaded.tokenizer_2] if family == "sdxl" else [])]
    expected_pads = {"sd1": ["<|endoftext|>"], "sd2": ["!"], "sdxl": ["<|endoftext|>", "!"]}[family]
    assert [t.pad_token for t in tokenizers] == expected_pads
    assert all(len(t) == 49408 and t.model_max_length == 77 for t in tokenizers)
    if family != "sdxl":
        assert loaded.safety_checker is None and loaded.feature_extractor is None


def test_zero_terminal_snr_marker_rescales_the_betas(sd1_files, tmp_path):
    pipe, config_dir, _ = sd1_files
    from safetensors.torch import load_file

    tensors = load_file(str(sd1_files[2]))
    ckpt = tmp_path / "vpred-ztsnr.safetensors"
    save_file({**tensors, "v_pred": torch.tensor([]), "ztsnr": torch.tensor([])}, str(ckpt))
    scheduler = sf.load_single_file(ckpt, "sd1", None, config_dir=config_dir).scheduler
    assert scheduler.config.prediction_type == "v_prediction" and scheduler.config.rescale_betas_zero_snr
    assert float(scheduler.alphas_cumprod[-1]) < 1e-6  # zero SNR at the last timestep


def test_v_prediction_flag_and_file_metadata_set_the_prediction_type(sd1_files, tmp_path):
    pipe, config_dir, ckpt = sd1_files
    forced = sf.load_single_file(ckpt, "sd1", True, config_dir=config_dir)
    assert forced.scheduler.config.prediction_type == "v_prediction"
    marked = write_single_file(pipe, "sd1", tmp_path / "v.safetensors", {"modelspec.prediction_type": "v"})
    assert sf.prediction_type_hint(marked) == "v_prediction"
    assert sf.load_single_file(marked, "sd1", None, config_dir=config_dir).scheduler.config.prediction_type == (
        "v_prediction"
    )
    assert sf.load_single_file(marked, "sd1", False, config_dir=config_dir).scheduler.config.prediction_type == (
        "epsilon"
    )


def test_sd1_file_without_the_text_model_level_loads(sd1_files, tmp_path):
    """Older merges store CLIP as `cond_stage_model.transformer.encoder.*`; A1111 and ComfyUI load them."""
    pipe, config_dir, ckpt = sd1_files
    from safetensors.torch import load_file

    old_style = {k.replace("transformer.text_model.", "transformer."): v for k, v in load_file(str(ckpt)).items()}
    assert "cond_stage_model.transformer.encoder.layers.0.mlp.fc1.weight" in old_style
    path = tmp_path / "old-merge.safetensors"
    save_file(old_style, str(path))
    assert sf.detect_family(path) == "sd1"
    loaded = sf.load_single_file(path, "sd1", None, torch.float16, config_dir=config_dir)
    assert loaded.text_encoder.dtype == torch.float16 and loaded.unet.dtype == torch.float16
    got, want = loaded.text_encoder.state_dict(), pipe.text_encoder.state_dict()
    assert sorted(got) == sorted(want) and all(torch.equal(got[k], want[k].half()) for k in want)
    del old_style["cond_stage_model.transformer.final_layer_norm.bias"]
    save_file(old_style, str(path))
    with pytest.raises(ModelError, match=r"no weights for 1 tensors of the text_encoder \(e.g. final_layer_norm.bias"):
        sf.load_single_file(path, "sd1", None, config_dir=config_dir)


def test_vae_override_from_a_standalone_ldm_vae_file(sd1_files, tmp_path):
    _, config_dir, ckpt = sd1_files
    other = tiny_vae(seed=7)
    randomize(other)
    vae_file = tmp_path / "vae-ft.safetensors"
    save_file({k: v.contiguous() for k, v in vae_to_ldm(other, prefix="").items()}, str(vae_file))
    loaded = sf.load_single_file(ckpt, "sd1", None, config_dir=config_dir, vae=vae_file)
    assert_same_weights(loaded.vae, other)
    diffusers_layout = tmp_path / "vae-diffusers.safetensors"
    save_file({k: v.contiguous() for k, v in other.state_dict().items()}, str(diffusers_layout))
    assert_same_weights(sf.load_vae(diffusers_layout, config_dir), other)
    other.save_pretrained(tmp_path / "vae-folder")
    assert_same_weights(sf.load_vae(tmp_path / "vae-folder", config_dir), other)
    unet_only = header_file(tmp_path / "not-a-vae.safetensors", [UNET_KEY])
    with pytest.raises(ModelError, match="not-a-vae.safetensors"):
        sf.load_vae(unet_only, config_dir)


def test_pickle_checkpoint_is_refused_unless_allowed(sd1_files, tmp_path):
    pipe, config_dir, ckpt = sd1_files
    from safetensors.torch import load_file

    pickle_file = tmp_path / "model.ckpt"
    torch.save({"state_dict": load_file(str(ckpt)), "global_step": 3}, str(pickle_file))
    for call in (lambda: sf.detect_family(pickle_file), lambda: sf.load_single_file(pickle_file, "sd1", None)):
        with pytest.raises(ModelError) as err:
            call()
        assert str(pickle_file) in err.value.message and "allow_pickle" in err.value.hint
    with pytest.warns(UserWarning, match="weights_only=False"):
        assert sf.detect_family(pickle_file, allow_pickle=True) == "sd1"
    with pytest.warns(UserWarning, match="weights_only=False"):
        loaded = sf.load_single_file(pickle_file, "sd1", None, allow_pickle=True, config_dir=config_dir)
    assert_same_weights(loaded.unet, pipe.unet)


def test_incomplete_or_mismatched_checkpoints_are_model_errors(sd1_files, tmp_path):
    pipe, config_dir, ckpt = sd1_files
    from safetensors.torch import load_file

    tensors = load_file(str(ckpt))
    del tensors["model.diffusion_model.out.2.weight"]
    partial = tmp_path / "partial.safetensors"
    save_file(tensors, str(partial))
    with pytest.raises(ModelError, match="partial.safetensors lacks weights that the sd1 config"):
        sf.load_single_file(partial, "sd1", None, config_dir=config_dir)
    tensors = load_file(str(ckpt))
    del tensors["cond_stage_model.transformer.text_model.final_layer_norm.bias"]
    save_file(tensors, str(partial))
    with pytest.raises(ModelError, match=r"no weights for 1 tensors of the text_encoder \(e.g. final_layer_norm.bias"):
        sf.load_single_file(partial, "sd1", None, config_dir=config_dir)
    with pytest.raises(ModelError, match="is an sd1 checkpoint, but family 'sdxl'"):
        sf.load_single_file(ckpt, "sdxl", None)
    tensors = load_file(str(ckpt))
    conv_in = tensors["model.diffusion_model.input_blocks.0.0.weight"]
    tensors["model.diffusion_model.input_blocks.0.0.weight"] = torch.cat([conv_in, conv_in, conv_in[:, :1]], dim=1)
    inpainting = tmp_path / "inpainting.safetensors"
    save_file(tensors, str(inpainting))
    with pytest.raises(ModelError, match=r"takes 9 input channels \(an inpainting model\).* expects 4"):
        sf.load_single_file(inpainting, "sd1", None, config_dir=config_dir)
    # The real SD 1.5 config does not fit the tiny weights: a shape error, reported as a ModelError.
    with pytest.raises(ModelError, match="cannot load .*tiny-sd1.safetensors as sd1"):
        sf.load_single_file(ckpt, "sd1", None)


# -- detection ----------------------------------------------------------------------------------------------------

UNET_KEY = "model.diffusion_model.input_blocks.0.0.weight"


@pytest.mark.parametrize(
    ("te_key", "family"),
    [
        ("cond_stage_model.transformer.text_model.embeddings.token_embedding.weight", "sd1"),
        ("cond_stage_model.model.transformer.resblocks.0.attn.in_proj_weight", "sd2"),
        ("conditioner.embedders.1.model.transformer.resblocks.0.attn.in_proj_weight", "sdxl"),
    ],
)
def test_detect_family_from_header(te_key, family, tmp_path):
    extra = ["conditioner.embedders.0.transformer.text_model.final_layer_norm.weight"] if family == "sdxl" else []
    path = header_file(tmp_path / "m.safetensors", [UNET_KEY, te_key, *extra])
    assert sf.detect_family(path) == family


def test_unknown_lora_missing_and_folder_are_model_errors(tmp_path):
    unknown = header_file(tmp_path / "odd.safetensors", ["foo.bar"])
    with pytest.raises(ModelError) as err:
        sf.detect_family(unknown)
    assert str(unknown) in err.value.message and "cond_stage_model.transformer." in err.value.hint
    lora = header_file(tmp_path / "style.safetensors", ["lora_unet_down_blocks_0_attentions_0_proj_in.lora_up.weight"])
    with pytest.raises(ModelError, match="LoRA"):
        sf.detect_family(lora)
    no_te = header_file(tmp_path / "unet-only.safetensors", [UNET_KEY])
    with pytest.raises(ModelError, match="not a checkpoint lorakit recognises"):
        sf.detect_family(no_te)
    missing = tmp_path / "nowhere.safetensors"
    with pytest.raises(ModelError, match="nowhere.safetensors"):
        sf.detect_family(missing)
    with pytest.raises(ModelError, match="nowhere.safetensors"):
        sf.load_single_file(missing, "sd1", None)
    with pytest.raises(ModelError, match="is a folder"):
        sf.detect_family(tmp_path)
    other = tmp_path / "model.gguf"
    other.write_bytes(b"GGUF")
    with pytest.raises(ModelError, match="model.gguf is neither a .safetensors nor a .ckpt"):
        sf.load_single_file(other, "sd1", None)
    garbage = tmp_path / "broken.safetensors"
    garbage.write_bytes(b"not a safetensors file at all")
    with pytest.raises(ModelError, match="cannot read .*broken.safetensors"):
        sf.detect_family(garbage)


def test_prediction_hints_in_headers(tmp_path):
    names = [UNET_KEY, "conditioner.embedders.1.model.ln_final.weight"]
    assert sf.prediction_type_hint(header_file(tmp_path / "a.safetensors", [*names, "v_pred"])) == "v_prediction"
    arch = {"modelspec.architecture": "stable-diffusion-v2-768-v"}
    assert sf.prediction_type_hint(header_file(tmp_path / "b.safetensors", names, arch)) == "v_prediction"
    base = {"modelspec.architecture": "stable-diffusion-v2-512"}
    assert sf.prediction_type_hint(header_file(tmp_path / "b2.safetensors", names, base)) == "epsilon"
    eps = {"modelspec.prediction_type": "epsilon"}
    assert sf.prediction_type_hint(header_file(tmp_path / "c.safetensors", names, eps)) == "epsilon"
    assert sf.prediction_type_hint(header_file(tmp_path / "d.safetensors", names)) is None
    assert [sf.default_arch("sd2", v) for v in (None, True, False)] == ["sd21-v", "sd21-v", "sd21-base"]


# -- shipped configs and tokenizer --------------------------------------------------------------------------------


def test_shipped_clip_tokenizer_gives_the_known_ids():
    tok = sf.load_clip_tokenizer()
    assert len(tok) == 49408 and tok.model_max_length == 77
    assert tok("a photo of a cat").input_ids == [49406, 320, 1125, 539, 320, 2368, 49407]
    merges = (sf.CLIP_VOCAB_DIR / "merges.txt").read_text(encoding="utf-8").splitlines()[1:]
    assert len(merges) == 49152 - 256 - 2
    vocab = json.loads((sf.CLIP_VOCAB_DIR / "vocab.json").read_text(encoding="utf-8"))
    assert vocab == vocab_from_merges(merges)


# Published parameter counts of the real models (UNet, VAE, each text encoder).
EXPECTED = {
    "sd15": (859_520_964, 83_653_863, [123_060_480], "epsilon", 64, ["<|endoftext|>"]),
    "sd21-base": (865_910_724, 83_653_863, [340_387_840], "epsilon", 64, ["!"]),
    "sd21-v": (865_910_724, 83_653_863, [340_387_840], "v_prediction", 96, ["!"]),
    "sdxl-base": (2_567_463_684, 83_653_863, [123_060_480, 694_659_840], "epsilon", 128, ["<|endoftext|>", "!"]),
}


@pytest.mark.parametrize("arch", sf.ARCHS)
def test_shipped_config_builds_the_real_architecture(arch):
    unet_n, vae_n, te_ns, prediction, sample_size, pads = EXPECTED[arch]
    root = sf.shipped_config(arch)
    with init_empty_weights():
        unet = UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(root / "unet"))
        vae = AutoencoderKL.from_config(AutoencoderKL.load_config(root / "vae"))
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert (count(unet), count(vae), unet.config.sample_size) == (unet_n, vae_n, sample_size)
    te_counts = []
    for name in ("text_encoder", "text_encoder_2")[: len(te_ns)]:
        cfg = CLIPTextConfig.from_pretrained(root / name)
        cls = CLIPTextModelWithProjection if cfg.architectures == ["CLIPTextModelWithProjection"] else CLIPTextModel
        with torch.device("meta"):
            te_counts.append(count(cls(cfg)))
    assert te_counts == te_ns
    assert sf._scheduler_for(root, None).config.prediction_type == prediction
    tokenizers = sf._tokenizers_for(root)
    assert [t.pad_token for t in tokenizers.values()] == pads
    assert all(t("a photo of a cat").input_ids[:3] == [49406, 320, 1125] for t in tokenizers.values())
