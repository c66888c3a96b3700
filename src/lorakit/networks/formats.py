"""Network files: the kohya/LyCORIS file of the attached network, resuming from one, the diffusers folder,
metadata, fit checks and safe saving.

The per-type key layouts live in the type modules (`lora.py`, `loha.py`, `lokr.py`); the pure state ⇄ file
conversion in `convert.py`. Names come from the family (`lora_unet_…`, `lora_te_text_model_…`, SDXL
`lora_te1_`/`lora_te2_`).
"""

from __future__ import annotations

import hashlib
import json
import struct
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save, save_file

from ..errors import ConfigError, LorakitError
from ..families import ModelParts
from ..families.unet_layout import base_layers
from ..io import atomic_path
from .attach import components, read_state, summary, write_state
from .convert import from_file, group_file, name_map, short_list, to_file
from .registry import ADAPTER

SAVE_DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
PEFT_PREFIX = "base_model.model."  # PeftModel.save_pretrained's key prefix, which PeftModel.from_pretrained expects


def to_kohya(parts: ModelParts, dtype: torch.dtype = torch.float32, adapter: str = ADAPTER) -> dict[str, torch.Tensor]:
    """The attached network as a kohya/LyCORIS state dict (any registered type), checked against the model's
    module names. Rank and alpha come from the trained modules."""
    state = read_state(parts, adapter)
    if not state:
        raise LorakitError("the model has no network attached")
    sd = {k: v.detach().to("cpu", dtype).contiguous() for k, v in to_file(state, name_map(parts)).items()}
    check_kohya_keys(sd, parts)
    return sd


def read_lora_file(path: Path, what: str = "network.network_weights") -> tuple[dict[str, torch.Tensor], dict]:
    """(tensors, metadata) of a .safetensors network file; an unreadable file is an error naming it."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), "pt") as f:
            return {k: f.get_tensor(k) for k in f.keys()}, dict(f.metadata() or {})
    except Exception as exc:  # safetensors raises several types for a bad file
        raise LorakitError(f"cannot read {what} {path}: {exc}", "point it at a LoRA .safetensors file") from exc


def load_kohya_weights(parts: ModelParts, path: Path, adapter: str = ADAPTER) -> int:
    """Copy a network file's weights into the attached network (resuming); returns the modules loaded.

    The file must fit the network exactly: same type, modules, ranks and alphas; otherwise an error names what
    differs. A component the file lacks entirely (e.g. a new text-encoder network) starts fresh.
    """
    sd, _ = read_lora_file(path)
    names = name_map(parts)
    path_of = {n: p for p, n in names.items()}
    grouped = group_file(sd)
    known = {k: v for k, v in sd.items() if k.partition(".")[0] in path_of}
    state = from_file(known, names)
    file_parts = {_prefix(n) for n in grouped}
    problems = [f"{n}: in the file but not in the network" for n in sorted(set(grouped) - set(path_of))]
    for p in read_state(parts, adapter):
        if p not in state and _prefix(names[p]) in file_parts:  # a component the file has must be complete
            problems.append(f"{names[p]}: not in the file")
    problems += [f"{names[p]}: {msg}" for p, msg in write_state(parts, state, adapter)]
    if problems or not state:
        what = (f"{len(problems)} module(s) differ, e.g. " + "; ".join(problems[:3])) if problems \
            else "no module names match"
        raise LorakitError(
            f"network.network_weights {path} does not fit this network: {what}",
            "use a network trained on the same model family with the same type, network_dim and target modules",
        )
    return len(state)


def kohya_modules(parts: ModelParts) -> dict[str, torch.nn.Module]:
    """{kohya name: Linear/Conv2d layer} of the UNet and text encoders (every family names every layer)."""
    names = name_map(parts)
    return {names[f"{attr}.{path}"]: layer for attr, module in components(parts)
            for path, layer in base_layers(module).items()}


def kohya_module_names(parts: ModelParts) -> set[str]:
    """Every kohya name a loader could match in this model (Linear and Conv modules of UNet and text encoders)."""
    return set(kohya_modules(parts))


def _prefix(name: str) -> str:
    """'lora_unet', 'lora_te', 'lora_te1', …: the component part of a kohya module name."""
    return "_".join(name.split("_")[:2])


def kohya_fit_problems(parts: ModelParts, shapes: dict[str, list[int]]) -> tuple[int, list[str]]:
    """(kohya modules in a LoRA file, those that do not fit the model): a module the model lacks, or whose
    input/output width or kind (Linear vs Conv) differs from the model's layer. Only `shapes` (tensor name → shape,
    from the header) is needed."""
    model = kohya_modules(parts)
    modules: dict[str, dict[str, list[int]]] = {}
    for key, shape in shapes.items():
        name, _, suffix = key.partition(".")
        if name.startswith(("lora_unet_", "lora_te")):
            modules.setdefault(name, {})[suffix] = shape
    problems = []
    for name, tensors in modules.items():
        layer = model.get(name)
        if layer is None:
            problems.append(f"{name} (not in the model)")
            continue
        down, up = tensors.get("lora_down.weight"), tensors.get("lora_up.weight")
        if down is None or up is None:  # LoHa / LoKr / other layouts: the name is what can be checked
            continue
        conv = isinstance(layer, torch.nn.Conv2d)
        want_in, want_out = (layer.in_channels, layer.out_channels) if conv else (layer.in_features, layer.out_features)
        if (len(down) == 4) != conv or len(down) < 2 or len(up) < 1:
            problems.append(f"{name} ({'conv' if len(down) == 4 else 'linear'} in the LoRA, "
                            f"{'conv' if conv else 'linear'} in the model)")
        elif (down[1], up[0]) != (want_in, want_out):
            problems.append(f"{name} (LoRA {down[1]}→{up[0]}, model {want_in}→{want_out})")
    return len(modules), problems


def peft_fit_problems(parts: ModelParts, loaded: dict[str, dict[str, torch.Tensor]]) -> tuple[int, list[str]]:
    """(adapted modules in a PEFT folder's state, those that do not fit the model): a component or module the model
    lacks, or a width that differs from the model's layer."""
    count, problems = 0, []
    for component, state in loaded.items():
        module = getattr(parts.pipeline, component, None)
        layers = dict(module.named_modules()) if isinstance(module, torch.nn.Module) else None
        pairs: dict[str, dict[str, torch.Tensor]] = {}
        for key, tensor in state.items():
            path, _, rest = key.rpartition(".lora_")
            if path:
                pairs.setdefault(path, {})[rest.split(".")[0]] = tensor
        for path, pair in pairs.items():
            count += 1
            layer = layers.get(path) if layers is not None else None
            if layers is None:
                problems.append(f"{component}.{path} (no {component} in the {parts.family.name} model)")
                continue
            if not isinstance(layer, (torch.nn.Linear, torch.nn.Conv2d)):
                problems.append(f"{component}.{path} (not in the model)")
                continue
            conv = isinstance(layer, torch.nn.Conv2d)
            want = (layer.in_channels, layer.out_channels) if conv else (layer.in_features, layer.out_features)
            a, b = pair.get("A"), pair.get("B")
            if a is not None and b is not None and (a.shape[1], b.shape[0]) != want:
                problems.append(f"{component}.{path} (LoRA {a.shape[1]}→{b.shape[0]}, model {want[0]}→{want[1]})")
    return count, problems


def check_kohya_keys(sd: dict[str, torch.Tensor], parts: ModelParts) -> None:
    """Every key must name a module of the model: an unmatched key would be silently ignored by a UI."""
    valid = kohya_module_names(parts)
    bad = sorted({k.split(".")[0] for k in sd} - valid)
    if bad:
        raise LorakitError(
            f"{len(bad)} LoRA key(s) match no module of the {parts.family.name} model: {short_list(bad)}",
            "this is a lorakit bug in the key mapping; please report it with the model and target modules",
        )


def safetensors_hashes(sd: dict[str, torch.Tensor], metadata: dict[str, str]) -> tuple[str, str]:
    """(`sshs_model_hash`, `sshs_legacy_hash`) as kohya computes them: over the file serialised with only the
    `ss_*` metadata — the model hash covers the tensor data after the header, the legacy hash 64 KiB at 1 MiB."""
    blob = save(sd, {k: v for k, v in metadata.items() if k.startswith("ss_")})
    (header_len,) = struct.unpack("<Q", blob[:8])
    model_hash = hashlib.sha256(blob[8 + header_len :]).hexdigest()
    legacy = hashlib.sha256(blob[0x100000 : 0x100000 + 0x10000]).hexdigest()[:8]
    return model_hash, legacy


def save_kohya(path: Path, sd: dict[str, torch.Tensor], metadata: dict[str, str]) -> Path:
    """Write a kohya LoRA atomically, adding the content hashes to the metadata."""
    model_hash, legacy = safetensors_hashes(sd, metadata)
    meta = {**metadata, "sshs_model_hash": model_hash, "sshs_legacy_hash": legacy}
    with atomic_path(path, _file_size(sd, meta)) as tmp:
        save_file(sd, str(tmp), metadata=meta)
    return path


def _file_size(sd: dict[str, torch.Tensor], metadata: dict[str, str]) -> int:
    """About the bytes a .safetensors file of `sd` takes: the tensor data plus a header (JSON of keys, shapes,
    offsets and metadata)."""
    header = len(json.dumps(metadata)) + sum(len(k) + 80 for k in sd)
    return sum(t.numel() * t.element_size() for t in sd.values()) + header + 8


DIFFUSERS_WEIGHTS = "pytorch_lora_weights.safetensors"  # the file diffusers' save_lora_weights writes


def check_peft_format(parts: ModelParts, adapter: str = ADAPTER) -> None:
    """The diffusers folder exists for LoRA/LoCon only: refuse it for DoRA/LoHa/LoKr before training starts."""
    net, modules = summary(parts, adapter)
    kind = "dora" if modules.options.get("use_dora") else net.name
    if kind != "lora":  # diffusers' load_lora_weights does not reproduce a DoRA (tested) and has no LoHa/LoKr
        raise ConfigError([f"output.save_format: the diffusers folder for {kind} is not implemented yet"],
                          "use output.save_format = 'kohya' (ComfyUI, A1111 and lorakit generate load it)")


def save_peft(folder: Path, parts: ModelParts, dtype: torch.dtype, adapter: str = ADAPTER) -> Path:
    """Write the network as diffusers' own `save_lora_weights` does (`<folder>/pytorch_lora_weights.safetensors`,
    keys `unet.…`/`text_encoder.…`/`text_encoder_2.…`, each component's LoraConfig in the metadata), which
    `pipe.load_lora_weights(folder)` and ComfyUI load. LoRA/LoCon only (see `check_peft_format`)."""
    from peft import get_peft_model_state_dict

    check_peft_format(parts, adapter)
    kwargs: dict[str, object] = {}
    for attr, module in components(parts):
        if adapter in (getattr(module, "peft_config", None) or {}):
            kwargs[f"{attr}_lora_layers"] = {k: v.detach().to("cpu", dtype).contiguous() for k, v in
                                             get_peft_model_state_dict(module, adapter_name=adapter).items()}
            config = module.peft_config[adapter].to_dict()
            kwargs[f"{attr}_lora_adapter_metadata"] = json.loads(json.dumps(config, default=sorted))  # sets -> lists
    size = sum(_file_size(v, {}) for k, v in kwargs.items() if k.endswith("_layers"))  # type: ignore[arg-type]
    folder.mkdir(parents=True, exist_ok=True)
    with atomic_path(folder / DIFFUSERS_WEIGHTS, size) as tmp:
        type(parts.pipeline).save_lora_weights(folder, weight_name=tmp.name, safe_serialization=True, **kwargs)
    return folder


def load_peft_folder(folder: Path) -> dict[str, dict[str, torch.Tensor]]:
    """{component: state dict with peft's keys} of a diffusers LoRA folder (`save_peft`), or of the PeftModel
    layout earlier lorakit versions wrote (`<component>/adapter_model.safetensors`)."""
    from safetensors.torch import load_file

    out: dict[str, dict[str, torch.Tensor]] = {}
    if (folder / DIFFUSERS_WEIGHTS).is_file():
        for key, tensor in load_file(folder / DIFFUSERS_WEIGHTS).items():
            component, _, rest = key.partition(".")
            out.setdefault(component, {})[rest] = tensor
        return out
    for sub in sorted(p for p in folder.iterdir() if (p / "adapter_model.safetensors").is_file()):
        sd = load_file(sub / "adapter_model.safetensors")
        out[sub.name] = {k.removeprefix(PEFT_PREFIX): v for k, v in sd.items()}
    return out


def kohya_metadata(parts: ModelParts, *, name: str, resolution: tuple[int, int],
                   steps: int, epochs: int, learning_rate: float, te_trained: bool, seed: int,
                   tag_frequency: dict[str, dict[str, int]], num_images: int, created: str,
                   adapter: str = ADAPTER) -> dict[str, str]:
    """String metadata: the `ss_*` keys A1111/kohya tools read and the `modelspec.*` keys. The network's module,
    args, dim and alpha are read from the attached (trained) modules."""
    fam, (w, h) = parts.family, resolution
    net, modules = summary(parts, adapter)
    pairs = modules.linear or modules.conv
    dim, alpha = max(set(pairs), key=pairs.count)  # the most common (rank, alpha): kohya's network_dim/alpha
    meta = {
        **net.metadata(modules),
        "ss_network_dim": str(dim),
        "ss_network_alpha": str(float(alpha)),
        "ss_base_model_version": fam.base_model_version(parts),
        "ss_v2": str(fam.name == "sd2"),
        "ss_v_parameterization": str(parts.prediction_type == "v_prediction"),
        "ss_resolution": f"({w}, {h})",
        "ss_steps": str(steps),
        "ss_epoch": str(epochs),
        "ss_learning_rate": str(learning_rate),
        "ss_seed": str(seed),
        "ss_num_train_images": str(num_images),
        "ss_output_name": name,
        "ss_network_train_unet_only": str(not te_trained),
        "ss_training_comment": "trained with lorakit",
        "ss_tag_frequency": json.dumps(tag_frequency),
        "modelspec.sai_model_spec": "1.0.0",
        "modelspec.architecture": fam.modelspec_architecture(parts),
        "modelspec.implementation": "https://github.com/Stability-AI/generative-models"
        if fam.name == "sdxl" else "diffusers",
        "modelspec.title": name,
        "modelspec.resolution": f"{w}x{h}",
        "modelspec.date": created,
        "modelspec.prediction_type": "v" if parts.prediction_type == "v_prediction" else "epsilon",
    }
    return meta
