"""Single-file checkpoints (A1111 / ComfyUI / civitai `.safetensors`), loaded offline.

diffusers' own `from_single_file` does the key conversion; what it needs besides the file is a diffusers-layout
config folder, which it would otherwise fetch from the Hugging Face hub. lorakit ships those folders as package data
(`configs/<arch>/`, real architectures' published values) plus one CLIP BPE vocabulary (`configs/clip/`) shared by
every tokenizer, so no network is touched. See `configs/README.md` for their sources.
"""

from __future__ import annotations

import json
import logging
import tempfile
import warnings
from pathlib import Path
from typing import Any

import torch

from ..errors import ModelError

logger = logging.getLogger(__name__)

CONFIGS_DIR = Path(__file__).parent / "configs"
CLIP_VOCAB_DIR = CONFIGS_DIR / "clip"
ARCHS = ("sd15", "sd21-base", "sd21-v", "sdxl-base")
PICKLE_SUFFIXES = (".ckpt", ".pt", ".pth", ".bin")
SAFETENSORS_SUFFIX = ".safetensors"

UNET_PREFIX = "model.diffusion_model."
LEGACY_SD1_TE_PREFIX = "cond_stage_model.transformer."
LEGACY_SD1_TE_MARKER = "cond_stage_model.transformer.encoder."  # no `text_model.` level
# Tensor-name prefixes that identify each family's text encoder, most specific first.
FAMILY_MARKERS: tuple[tuple[str, str, str], ...] = (
    ("sdxl", "conditioner.embedders.1.", "SDXL (conditioner.embedders.1.* OpenCLIP bigG)"),
    ("sd2", "cond_stage_model.model.transformer.", "SD 2.x (cond_stage_model.model.transformer.* OpenCLIP)"),
    ("sd1", "cond_stage_model.transformer.", "SD 1.x (cond_stage_model.transformer.* CLIP)"),
)
# Files that are not a base model but are often picked by mistake: (prefix, what it is).
NOT_A_BASE_MODEL: tuple[tuple[str, str], ...] = (
    ("lora_unet_", "a LoRA (kohya keys); use it as network.network_weights, not as the base model"),
    ("lora_te", "a LoRA (kohya keys); use it as network.network_weights, not as the base model"),
    ("conditioner.embedders.0.model.", "an SDXL refiner, which lorakit does not train"),
    ("first_stage_model.", "a VAE only; set it as model.vae next to a base model"),
    ("encoder.down.0.", "a VAE only; set it as model.vae next to a base model"),
    ("down_blocks.0.", "one diffusers component; point at the diffusers folder that holds it"),
    ("double_blocks.", "a FLUX model, which lorakit does not support yet"),
    ("joint_blocks.", "an SD3 model, which lorakit does not support yet"),
)


# -- reading files ------------------------------------------------------------------------------------------------
def _require_file(path: Path) -> Path:
    path = Path(path).expanduser()
    if not path.exists():
        raise ModelError(f"model file not found: {path}", "check model.pretrained_model_name_or_path")
    if path.is_dir():
        raise ModelError(
            f"{path} is a folder, not a single-file checkpoint", "a diffusers folder is loaded as a folder"
        )
    return path


def _is_pickle(path: Path) -> bool:
    return path.suffix.lower() in PICKLE_SUFFIXES


def _refuse_pickle(path: Path) -> None:
    raise ModelError(
        f"refusing to load {path}: .ckpt/.pt/.pth/.bin files are Python pickles and can run arbitrary code when loaded",
        "use a .safetensors version of the model, or set model.allow_pickle = true if you trust this file",
    )


def read_header(path: Path) -> tuple[list[str], dict[str, str]]:
    """Tensor names and string metadata of a `.safetensors` file, reading only its header (never the tensors)."""
    from safetensors import safe_open

    path = _require_file(path)
    try:
        with safe_open(str(path), framework="pt") as f:
            return list(f.keys()), dict(f.metadata() or {})
    except Exception as exc:  # safetensors raises its own SafetensorError, OSError, ...
        raise ModelError(
            f"cannot read {path} as .safetensors: {exc}", "the file may be truncated or not a model"
        ) from exc


def _load_pickle_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Tensors of a pickle checkpoint, after a warning (only called when the user opted in)."""
    warnings.warn(
        f"loading pickle checkpoint {path} with torch.load(weights_only=False): this runs any code it contains; "
        "convert it to .safetensors once you trust it",
        UserWarning,
        stacklevel=3,
    )
    try:
        obj: Any = torch.load(str(path), map_location="cpu", weights_only=False)
    except Exception as exc:
        raise ModelError(f"cannot read {path} as a PyTorch checkpoint: {exc}", "the file may be truncated") from exc
    while isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict):
        raise ModelError(f"{path} holds a {type(obj).__name__}, not a state dict", "is this a model checkpoint?")
    return {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}


def _check_format(path: Path, allow_pickle: bool) -> None:
    """Accept `.safetensors`, and pickles only when the user opted in."""
    if _is_pickle(path):
        if not allow_pickle:
            _refuse_pickle(path)
    elif path.suffix.lower() != SAFETENSORS_SUFFIX:
        raise ModelError(
            f"{path} is neither a .safetensors nor a .ckpt/.pt/.pth checkpoint",
            "use the model's .safetensors file (rename it if it is one under another extension)",
        )


def _tensor_names(path: Path, allow_pickle: bool) -> tuple[list[str], dict[str, str]]:
    """Names and metadata of a checkpoint: the header of a `.safetensors`, or an opted-in pickle's keys."""
    path = _require_file(path)
    _check_format(path, allow_pickle)
    return (list(_load_pickle_state_dict(path)), {}) if _is_pickle(path) else read_header(path)


# -- detection ----------------------------------------------------------------------------------------------------
def family_from_names(names: list[str], source: str = "checkpoint") -> str:
    """'sd1' | 'sd2' | 'sdxl' from an original (LDM/SGM) checkpoint's tensor names; ModelError otherwise."""
    has_unet = any(n.startswith(UNET_PREFIX) for n in names)
    for family, prefix, _ in FAMILY_MARKERS:
        if has_unet and any(n.startswith(prefix) for n in names):
            return family
    expected = "; ".join(desc for _, _, desc in FAMILY_MARKERS)
    for prefix, what in NOT_A_BASE_MODEL:
        if any(n.startswith(prefix) for n in names):
            raise ModelError(f"{source} is not a base model checkpoint: it looks like {what}", f"expected {expected}")
    sample = ", ".join(names[:3]) or "no tensors at all"
    raise ModelError(
        f"{source} is not a checkpoint lorakit recognises (first tensors: {sample})",
        f"expected a full model with UNet weights ({UNET_PREFIX}*) and one of: {expected}",
    )


def detect_family(path: Path, allow_pickle: bool = False) -> str:
    """The family ('sd1', 'sd2' or 'sdxl') of a single-file checkpoint, from its tensor names alone.

    For `.safetensors` only the header is read. Pickle files (`.ckpt`, `.pt`, `.pth`) are refused unless
    `allow_pickle` is set, since reading their names means unpickling them.
    """
    path = _require_file(path)
    names, _ = _tensor_names(path, allow_pickle)
    return family_from_names(names, str(path))


def prediction_type_hint(path: Path) -> str | None:
    """'v_prediction' / 'epsilon' if a `.safetensors` file says which it is, else None (header only)."""
    path = _require_file(path)
    return None if _is_pickle(path) else _prediction_from_header(*read_header(path))


def _prediction_from_header(names: list[str], meta: dict[str, str]) -> str | None:
    """Evidence in a header: a `v_pred` marker tensor (v-pred SDXL models, as ComfyUI reads it), or the
    `modelspec.prediction_type` / `modelspec.architecture` metadata kohya and others write."""
    if "v_pred" in names:
        return "v_prediction"
    pred = meta.get("modelspec.prediction_type", "").lower()
    if pred in ("v", "v_prediction", "v-prediction"):
        return "v_prediction"
    if pred in ("epsilon", "eps"):
        return "epsilon"
    arch = meta.get("modelspec.architecture", "")
    if arch.startswith("stable-diffusion-v2"):  # kohya: stable-diffusion-v2-768-v or stable-diffusion-v2-512
        return "v_prediction" if arch.split("/")[0].endswith("-v") else "epsilon"
    return None


def default_arch(family: str, v_prediction: bool | None) -> str:
    """The shipped config folder for a family: sd1 → sd15, sdxl → sdxl-base, sd2 → sd21-v (768, v-prediction)
    unless `v_prediction` is False (→ sd21-base, 512, epsilon)."""
    if family == "sd1":
        return "sd15"
    if family == "sdxl":
        return "sdxl-base"
    if family == "sd2":
        return "sd21-base" if v_prediction is False else "sd21-v"
    raise ModelError(f"unknown model family '{family}'", "use one of: sd1, sd2, sdxl")


def shipped_config(arch: str) -> Path:
    """Path of a shipped diffusers-layout config folder (`sd15`, `sd21-base`, `sd21-v`, `sdxl-base`)."""
    if arch not in ARCHS:
        raise ModelError(f"no shipped config '{arch}'", f"use one of: {', '.join(ARCHS)}")
    return CONFIGS_DIR / arch


# -- tokenizers ---------------------------------------------------------------------------------------------------
def load_clip_tokenizer(folder: Path | None = None) -> Any:
    """A `CLIPTokenizer` from `folder` if it has its own vocabulary, else the shipped CLIP BPE with `folder`'s
    `tokenizer_config.json` (pad token, max length) applied on top."""
    from transformers import CLIPTokenizer

    own_vocab = folder is not None and (
        (folder / "tokenizer.json").is_file()
        or ((folder / "vocab.json").is_file() and (folder / "merges.txt").is_file())
    )
    if own_vocab:
        return CLIPTokenizer.from_pretrained(str(folder))
    overrides: dict[str, Any] = {}
    if folder is not None and (folder / "tokenizer_config.json").is_file():
        cfg = json.loads((folder / "tokenizer_config.json").read_text(encoding="utf-8"))
        keys = ("pad_token", "model_max_length", "bos_token", "eos_token", "unk_token")
        overrides = {k: cfg[k] for k in keys if k in cfg}
    if not (CLIP_VOCAB_DIR / "vocab.json").is_file():
        raise ModelError(
            f"the CLIP vocabulary shipped with lorakit is missing ({CLIP_VOCAB_DIR})",
            "reinstall lorakit, or pass a config folder whose tokenizer/ has vocab.json and merges.txt",
        )
    return CLIPTokenizer.from_pretrained(str(CLIP_VOCAB_DIR), **overrides)


def _tokenizers_for(config_dir: Path) -> dict[str, Any]:
    """Tokenizer objects for the tokenizer components listed in `config_dir/model_index.json`."""
    index = json.loads((config_dir / "model_index.json").read_text(encoding="utf-8"))
    return {
        name: load_clip_tokenizer(config_dir / name)
        for name, spec in index.items()
        if name.startswith("tokenizer") and isinstance(spec, list) and spec[0] is not None
    }


# -- loading ------------------------------------------------------------------------------------------------------
def _scheduler_for(config_dir: Path, v_prediction: bool | None, zero_snr: bool = False) -> Any:
    """The config folder's scheduler, with prediction_type forced when `v_prediction` is set and the betas
    rescaled to zero terminal SNR when the checkpoint was trained that way (`ztsnr` marker)."""
    import diffusers

    cfg = json.loads((config_dir / "scheduler" / "scheduler_config.json").read_text(encoding="utf-8"))
    cls = getattr(diffusers, cfg.get("_class_name", "DDIMScheduler"))
    extra: dict[str, Any] = {}
    if v_prediction is not None:
        extra["prediction_type"] = "v_prediction" if v_prediction else "epsilon"
    if zero_snr:
        extra["rescale_betas_zero_snr"] = True
    return cls.from_pretrained(str(config_dir), subfolder="scheduler", **extra)


def _meta_tensors(module: torch.nn.Module) -> list[str]:
    """Names of parameters and buffers a loader left on the `meta` device (weights missing from the file)."""
    tensors = [*module.named_parameters(), *module.named_buffers()]
    return [name for name, t in tensors if t.device.type == "meta"]


def _check_complete(pipe: Any, path: Path, config_dir: Path) -> None:
    for name, component in pipe.components.items():
        if isinstance(component, torch.nn.Module):
            missing = _meta_tensors(component)
            if missing:
                raise ModelError(
                    f"{path} has no weights for {len(missing)} tensors of the {name} "
                    f"(e.g. {', '.join(missing[:3])})",
                    f"the file is incomplete, or its architecture differs from the config in {config_dir}",
                )


def _check_unet_inputs(source: Path, path: Path, config_dir: Path) -> None:
    """Refuse, with a clear reason, a UNet whose input width differs from the config's (inpainting: 9 channels,
    instruct-pix2pix: 8) before diffusers fails on the shape. Reads one shape from the header."""
    from safetensors import safe_open

    name = UNET_PREFIX + "input_blocks.0.0.weight"
    with safe_open(str(source), framework="pt") as f:
        if name not in f.keys():
            return
        got = f.get_slice(name).get_shape()[1]
    want = json.loads((config_dir / "unet" / "config.json").read_text(encoding="utf-8")).get("in_channels", 4)
    if got != want:
        kind = {9: " (an inpainting model)", 8: " (an instruct-pix2pix model)"}.get(got, "")
        raise ModelError(
            f"{path}'s UNet takes {got} input channels{kind}; the config in {config_dir} expects {want}",
            "lorakit trains LoRAs on text-to-image base models; use the non-inpainting version of this model",
        )


def _legacy_sd1_text_encoder(source: Path, names: list[str], config_dir: Path, torch_dtype: Any) -> Any:
    """The CLIP text encoder of an SD1 file written without the `text_model.` level
    (`cond_stage_model.transformer.encoder.*`, as some older merges are; A1111 and ComfyUI accept them,
    diffusers does not). Only the text encoder's tensors are read."""
    from accelerate import init_empty_weights
    from safetensors import safe_open
    from transformers import CLIPTextConfig, CLIPTextModel

    with init_empty_weights():
        model = CLIPTextModel(CLIPTextConfig.from_pretrained(str(config_dir / "text_encoder")))
    expected = set(model.state_dict())
    level = "text_model." if any(k.startswith("text_model.") for k in expected) else ""
    state = {}
    with safe_open(str(source), framework="pt") as f:
        for name in names:
            if name.startswith(LEGACY_SD1_TE_PREFIX):
                key = level + name[len(LEGACY_SD1_TE_PREFIX) :].removeprefix("text_model.")
                if key in expected:
                    state[key] = f.get_tensor(name)
    missing = sorted(expected - set(state))
    if missing:
        raise ModelError(
            f"{source} has no weights for {len(missing)} tensors of the text_encoder (e.g. {', '.join(missing[:3])})",
            f"the file is incomplete, or its architecture differs from the config in {config_dir}",
        )
    model.load_state_dict(state, assign=True)
    return model.to(torch_dtype).eval() if torch_dtype is not None else model.eval()


def _pickle_as_safetensors(path: Path, tmp: Path) -> Path:
    """Write a pickle checkpoint's tensors to a temporary `.safetensors` so one loader handles both formats."""
    from safetensors.torch import save_file

    seen: set[int] = set()
    tensors: dict[str, torch.Tensor] = {}
    for key, t in _load_pickle_state_dict(path).items():
        ptr = t.untyped_storage().data_ptr()
        tensors[key] = t.contiguous().clone() if ptr in seen else t.contiguous()
        seen.add(ptr)
    out = tmp / (path.stem + SAFETENSORS_SUFFIX)
    save_file(tensors, str(out))
    return out


def load_single_file(
    path: Path,
    family: str,
    v_prediction: bool | None,
    torch_dtype: torch.dtype | None = None,
    allow_pickle: bool = False,
    config_dir: Path | None = None,
    vae: Path | None = None,
) -> Any:
    """Load an original SD1/SD2/SDXL single-file checkpoint as a diffusers pipeline, with no network access.

    `config_dir` is a diffusers-layout folder describing the architecture (default: the shipped one for `family`,
    see `default_arch`). `v_prediction` True/False forces the scheduler's prediction type, None keeps what the file
    says (`prediction_type_hint`) or else the config's default. `vae` optionally replaces the VAE (see `load_vae`).
    Pickle files need `allow_pickle=True`. Raises `ModelError` for anything the user can fix.
    """
    path = _require_file(path)
    _check_format(path, allow_pickle)
    with tempfile.TemporaryDirectory(prefix="lorakit-ckpt-", ignore_cleanup_errors=True) as tmp:
        source = _pickle_as_safetensors(path, Path(tmp)) if _is_pickle(path) else path
        names, meta = read_header(source)
        detected = family_from_names(names, str(path))
        if detected != family:
            raise ModelError(
                f"{path} is an {detected} checkpoint, but family '{family}' was requested",
                f'set model.family = "{detected}" (or "auto")',
            )
        if v_prediction is None and (hint := _prediction_from_header(names, meta)) is not None:
            v_prediction = hint == "v_prediction"
        elif v_prediction is None and family == "sd2" and config_dir is None:
            logger.warning(
                "%s: SD 2.x checkpoint without a prediction-type marker; assuming 768 v-prediction (SD 2.1). "
                "Set model.v_parameterization = false for a 512 epsilon model (SD 2.x base).",
                path,
            )
        config_dir = Path(config_dir) if config_dir is not None else shipped_config(default_arch(family, v_prediction))
        if not (config_dir / "model_index.json").is_file() or not (config_dir / "scheduler").is_dir():
            raise ModelError(
                f"config folder {config_dir} is not a diffusers pipeline layout (model_index.json, scheduler/, ...)",
                "pass a diffusers model folder, or leave config_dir unset to use the shipped configs",
            )
        _check_unet_inputs(source, path, config_dir)
        components: dict[str, Any] = {
            **_tokenizers_for(config_dir),
            "scheduler": _scheduler_for(config_dir, v_prediction, zero_snr="ztsnr" in names),
        }
        if vae is not None:
            components["vae"] = load_vae(Path(vae), config_dir, torch_dtype)
        if family == "sd1" and any(n.startswith(LEGACY_SD1_TE_MARKER) for n in names):
            components["text_encoder"] = _legacy_sd1_text_encoder(source, names, config_dir, torch_dtype)
        pipe = _from_single_file(source, path, family, config_dir, components, torch_dtype)
    _check_complete(pipe, path, config_dir)
    return pipe


def _from_single_file(
    source: Path,
    path: Path,
    family: str,
    config_dir: Path,
    components: dict[str, Any],
    torch_dtype: torch.dtype | None,
) -> Any:
    """diffusers' `from_single_file` with a local config folder; `components` (tokenizers, scheduler, ...) are
    passed in ready-made and not loaded again."""
    from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline

    pipeline_class = StableDiffusionXLPipeline if family == "sdxl" else StableDiffusionPipeline
    try:
        return pipeline_class.from_single_file(
            str(source), config=str(config_dir), local_files_only=True, torch_dtype=torch_dtype, **components
        )
    except Exception as exc:  # diffusers raises ValueError/KeyError/OSError/its own errors for bad files
        if "meta tensor" in str(exc):  # a weight the config expects was not in the file
            raise ModelError(
                f"{path} lacks weights that the {family} config in {config_dir} expects",
                "the file is incomplete, or its architecture differs from that config",
            ) from exc
        raise ModelError(
            f"cannot load {path} as {family} with the config in {config_dir}: {exc}",
            "check model.family and model.v_parameterization; the file may be damaged or another architecture",
        ) from exc


def load_vae(path: Path, config_dir: Path, torch_dtype: torch.dtype | None = None) -> Any:
    """A VAE override: a diffusers folder, or a single `.safetensors` file in original (LDM) or diffusers layout.

    `config_dir` is the model's config folder; its `vae/config.json` describes the VAE (a single VAE file has
    no config of its own, and the scaling factor differs between SD1/2 and SDXL).
    """
    from diffusers import AutoencoderKL

    path = Path(path).expanduser()
    if path.is_dir():
        return AutoencoderKL.from_pretrained(str(path), torch_dtype=torch_dtype, local_files_only=True)
    path = _require_file(path)
    if _is_pickle(path):
        raise ModelError(f"refusing to load pickle VAE {path}", "use a .safetensors VAE file")
    try:
        vae = AutoencoderKL.from_single_file(
            str(path), config=str(config_dir), subfolder="vae", local_files_only=True, torch_dtype=torch_dtype
        )
    except Exception as exc:
        raise ModelError(f"cannot load VAE {path}: {exc}", "set model.vae to a VAE for this model family") from exc
    missing = _meta_tensors(vae)
    if missing:
        raise ModelError(
            f"{path} is not a complete VAE: {len(missing)} tensors missing (e.g. {', '.join(missing[:3])})",
            "set model.vae to a VAE file for this model family",
        )
    return vae
