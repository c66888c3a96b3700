"""LoRA file formats: peft/diffusers module state ⇄ kohya/A1111/ComfyUI keys, metadata, and safe saving.

kohya layout: `<name>.lora_down.weight` (peft lora_A), `<name>.lora_up.weight` (peft lora_B), `<name>.alpha`;
names come from the family (`lora_unet_…`, `lora_te_text_model_…`, SDXL `lora_te1_`/`lora_te2_`).
"""

from __future__ import annotations

import hashlib
import json
import struct
from pathlib import Path
from typing import Any

import torch
from peft import get_peft_model_state_dict
from safetensors.torch import save, save_file

from ..errors import LorakitError
from ..families import ModelParts
from ..io import atomic_path
from .lora import ADAPTER

SAVE_DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
PEFT_PREFIX = "base_model.model."  # PeftModel.save_pretrained's key prefix, which PeftModel.from_pretrained expects


def _adapter_modules(module: torch.nn.Module) -> dict[str, dict[str, torch.Tensor]]:
    """{module path: {"lora_A": tensor, "lora_B": tensor}} of a module's LoRA adapter."""
    out: dict[str, dict[str, torch.Tensor]] = {}
    for key, tensor in get_peft_model_state_dict(module, adapter_name=ADAPTER).items():
        path, _, rest = key.rpartition(".lora_")
        out.setdefault(path, {})["lora_" + rest.split(".")[0]] = tensor
    return out


def _namers(parts: ModelParts) -> list[tuple[torch.nn.Module, Any]]:
    """UNet and text encoders, each with its function from module path to kohya name."""
    fam = parts.family
    comps: list[tuple[torch.nn.Module, Any]] = [(parts.unet, lambda p: fam.kohya_unet_name(p, parts.unet))]
    return comps + [(te, lambda p, i=i: fam.kohya_te_name(i, p)) for i, te in enumerate(parts.text_encoders)]


def _components(parts: ModelParts) -> list[tuple[torch.nn.Module, Any]]:
    """The adapted ones of `_namers`."""
    return [(m, name_of) for m, name_of in _namers(parts) if ADAPTER in (getattr(m, "peft_config", None) or {})]


def to_kohya(parts: ModelParts, alpha: float, dtype: torch.dtype = torch.float32) -> dict[str, torch.Tensor]:
    """The trained adapter as a kohya state dict, checked against the model's module names."""
    sd: dict[str, torch.Tensor] = {}
    for module, name_of in _components(parts):
        for path, pair in _adapter_modules(module).items():
            name = name_of(path)
            sd[f"{name}.lora_down.weight"] = pair["lora_A"].detach().to("cpu", dtype).contiguous()
            sd[f"{name}.lora_up.weight"] = pair["lora_B"].detach().to("cpu", dtype).contiguous()
            sd[f"{name}.alpha"] = torch.tensor(float(alpha), dtype=dtype)
    check_kohya_keys(sd, parts)
    return sd


def load_kohya_weights(parts: ModelParts, path: Path, alpha: float) -> int:
    """Copy a kohya LoRA file's weights into the attached adapter (resuming); returns the modules loaded.

    The file must fit the network exactly: same modules, same rank, same alpha (the strength); otherwise an error
    names what differs.
    """
    from safetensors.torch import load_file

    try:
        sd = load_file(str(path))
    except Exception as exc:  # safetensors raises several types for a bad file
        raise LorakitError(f"cannot read network.network_weights {path}: {exc}",
                           "point it at a LoRA .safetensors file") from exc
    loaded, problems, expected = 0, [], set()
    file_parts = {k.split("_")[1] for k in sd}  # "unet", "te", "te1", "te2"
    for module, name_of in _components(parts):
        for mod_path, layer in _lora_layers(module).items():
            name = name_of(mod_path)
            expected.add(name)
            down, up = sd.get(f"{name}.lora_down.weight"), sd.get(f"{name}.lora_up.weight")
            if down is None or up is None:
                if name.split("_")[1] in file_parts:  # a component the file has must be complete
                    problems.append(f"{name}: not in the file")
                continue  # a component the file lacks (e.g. a new text-encoder LoRA) starts fresh
            file_alpha = sd.get(f"{name}.alpha")
            if file_alpha is not None and abs(float(file_alpha) - alpha) > 1e-6:
                problems.append(f"{name}: file has alpha {float(file_alpha):g}, network.network_alpha is {alpha:g}")
                continue
            a, b = layer.lora_A[ADAPTER].weight, layer.lora_B[ADAPTER].weight
            if down.shape != a.shape or up.shape != b.shape:
                problems.append(f"{name}: file has {tuple(down.shape)}, network has {tuple(a.shape)}")
                continue
            with torch.no_grad():
                a.copy_(down.to(a)), b.copy_(up.to(b))
            loaded += 1
    extra = sorted({k.split(".")[0] for k in sd} - expected)
    problems += [f"{name}: in the file but not in the network" for name in extra]
    if problems or not loaded:
        what = (f"{len(problems)} module(s) differ, e.g. " + "; ".join(problems[:3])) if problems \
            else "no module names match"
        raise LorakitError(
            f"network.network_weights {path} does not fit this network: {what}",
            "use a LoRA trained on the same model family with the same network_dim and target modules",
        )
    return loaded


def _lora_layers(module: torch.nn.Module) -> dict[str, Any]:
    """{module path: peft LoRA layer} of the adapted modules."""
    return {p: m for p, m in module.named_modules() if hasattr(m, "lora_A") and ADAPTER in m.lora_A}


def kohya_modules(parts: ModelParts) -> tuple[dict[str, torch.nn.Module], set[str]]:
    """({kohya name: Linear/Conv2d layer} of UNet and text encoders, name prefixes that cover only part of their
    component's layers — SDXL's UNet outside the mapped attention blocks has no kohya name here)."""
    named, partial, layers = {}, set(), (torch.nn.Linear, torch.nn.Conv2d)
    prefixes = ("lora_unet", *parts.family.kohya_te_prefixes)  # in `_namers` order
    for (module, name_of), prefix in zip(_namers(parts), prefixes):
        for path, mod in module.named_modules():
            if isinstance(mod, layers) and ".lora_" not in path:
                try:
                    named[name_of(path.replace(".base_layer", ""))] = mod
                except LorakitError:  # SDXL modules outside the mapped attention blocks
                    partial.add(prefix)
    return named, partial


def kohya_module_names(parts: ModelParts) -> set[str]:
    """Every kohya name a loader could match in this model (Linear and Conv modules of UNet and text encoders)."""
    return set(kohya_modules(parts)[0])


def _prefix(name: str) -> str:
    """'lora_unet', 'lora_te', 'lora_te1', …: the component part of a kohya module name."""
    return "_".join(name.split("_")[:2])


def short_list(items: list[str], shown: int = 3) -> str:
    """'a, b, c' or 'a, b, c and 17 more': an error names a few examples, never hundreds."""
    more = len(items) - shown
    return ", ".join(items[:shown]) + (f" and {more} more" if more > 0 else "")


def kohya_fit_problems(parts: ModelParts, shapes: dict[str, list[int]]) -> tuple[int, list[str]]:
    """(kohya modules in a LoRA file, those that do not fit the model): a module the model lacks, or whose
    input/output width or kind (Linear vs Conv) differs from the model's layer. Only `shapes` (tensor name → shape,
    from the header) is needed. Names the model's family leaves unmapped (SDXL UNet resnets) are not counted
    against it as long as some of that component's modules match."""
    model, partial = kohya_modules(parts)
    modules: dict[str, dict[str, list[int]]] = {}
    for key, shape in shapes.items():
        name, _, suffix = key.partition(".")
        if name.startswith(("lora_unet_", "lora_te")):
            modules.setdefault(name, {})[suffix] = shape
    matched = {_prefix(n) for n in modules if n in model}
    problems = []
    for name, tensors in modules.items():
        layer = model.get(name)
        if layer is None:
            if _prefix(name) not in partial or _prefix(name) not in matched:
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


def save_peft(folder: Path, parts: ModelParts, dtype: torch.dtype) -> Path:
    """Write the adapter in diffusers/PEFT layout: `<folder>/<component>/adapter_config.json` + weights."""
    for module, _ in _components(parts):
        attr = _attr_name(parts, module)
        sub = folder / attr
        sub.mkdir(parents=True, exist_ok=True)
        cfg = module.peft_config[ADAPTER]
        text = json.dumps(cfg.to_dict(), indent=2, default=list).encode("utf-8")
        with atomic_path(sub / "adapter_config.json", len(text)) as tmp:
            tmp.write_bytes(text)
        state = {PEFT_PREFIX + k: v.detach().to("cpu", dtype).contiguous() for k, v in
                 get_peft_model_state_dict(module, adapter_name=ADAPTER).items()}
        meta = {"format": "pt"}
        with atomic_path(sub / "adapter_model.safetensors", _file_size(state, meta)) as tmp:
            save_file(state, str(tmp), metadata=meta)
    return folder


def load_peft_folder(folder: Path) -> dict[str, dict[str, torch.Tensor]]:
    """{component: state dict without the PEFT prefix} of a folder written by `save_peft`."""
    from safetensors.torch import load_file

    out = {}
    for sub in sorted(p for p in folder.iterdir() if (p / "adapter_model.safetensors").is_file()):
        sd = load_file(sub / "adapter_model.safetensors")
        out[sub.name] = {k.removeprefix(PEFT_PREFIX): v for k, v in sd.items()}
    return out


def _attr_name(parts: ModelParts, module: torch.nn.Module) -> str:
    for attr in ("unet", *parts.family.text_encoder_attrs):
        if getattr(parts.pipeline, attr) is module:
            return attr
    raise AssertionError("module is not part of the pipeline")


def kohya_metadata(parts: ModelParts, *, name: str, dim: int, alpha: float, resolution: tuple[int, int],
                   steps: int, epochs: int, learning_rate: float, te_trained: bool, seed: int,
                   tag_frequency: dict[str, dict[str, int]], num_images: int, created: str) -> dict[str, str]:
    """String metadata: the `ss_*` keys A1111/kohya tools read and the `modelspec.*` keys."""
    fam, (w, h) = parts.family, resolution
    meta = {
        "ss_network_module": "networks.lora",
        "ss_network_dim": str(dim),
        "ss_network_alpha": str(alpha),
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
