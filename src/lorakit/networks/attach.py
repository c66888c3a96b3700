"""Attach a network of any registered type to a model's components, and read/write its tensors.

Targets are per component (`unet`, `text_encoder`, `text_encoder_2`): `{module path: (rank, alpha)}`. Trainable
parameters are the registered adapter parameters of peft's tuner layers (`NetworkType.peft_keys`), never found by
matching parameter names.
"""

from __future__ import annotations

import warnings
from contextlib import contextmanager
from typing import Any, Callable, Iterator

import torch
from peft.tuners.tuners_utils import BaseTunerLayer

from ..errors import LorakitError
from ..families import ModelParts
from .dropout import dropout_settings, install_dropout, remove_dropout
from .registry import ADAPTER, ModuleState, ModuleSummary, NetworkType, Targets, network_type, scalar, type_of_layer

def components(parts: ModelParts) -> list[tuple[str, torch.nn.Module]]:
    """(attribute name, module) of the UNet and the text encoders, in kohya-prefix order."""
    attrs = ("unet", *parts.family.text_encoder_attrs)
    return [(a, getattr(parts.pipeline, a)) for a in attrs if getattr(parts.pipeline, a, None) is not None]


def attach_network(parts: ModelParts, net_cfg: Any, targets: dict[str, Targets] | None = None,
                   net: NetworkType | None = None, adapter: str = ADAPTER,
                   **options: Any) -> list[torch.nn.Parameter]:
    """Freeze the model, add the configured network to each component with targets, return its trainable
    parameters. `targets` defaults to the config's selection (`networks.targets.select_targets`); `net`/`options`
    override the config's type and peft options (loading a file infers them from its tensors). The config's
    dropouts apply in training (`networks.dropout`); a network loaded from a file (no config) has none."""
    net = net or network_type(net_cfg.network_module)
    dropout = dropout_settings(net_cfg) if net_cfg is not None else None  # refuses what the type cannot apply
    if targets is None:
        from .targets import select_targets

        targets = select_targets(parts, net_cfg).components()
    for module in [m for m in (parts.unet, parts.vae, *parts.text_encoders) if m is not None]:
        module.requires_grad_(False)
    params: list[torch.nn.Parameter] = []
    for attr, module in components(parts):
        chosen = targets.get(attr)
        if not chosen:
            continue
        with warnings.catch_warnings():  # a second adapter on the same model is intended (Difference's pass 2)
            warnings.filterwarnings("ignore", message="Already found a `peft_config` attribute")
            module.add_adapter(net.peft_config(net_cfg, chosen, **options), adapter_name=adapter)
        _activate_all(module)
        got = set(adapter_layers(module, adapter))
        if got != set(chosen):  # peft matches by suffix: make sure it adapted exactly the modules asked for
            extra, missing = sorted(got - set(chosen)), sorted(set(chosen) - got)
            raise LorakitError(f"{attr}: peft adapted {extra[:3]} not asked for / missed {missing[:3]}")
        if dropout is not None:
            install_dropout(module, dropout, adapter)
        for p in network_parameters(module, adapter):
            p.requires_grad_(True)
            params.append(p)
    return params


def _activate_all(module: torch.nn.Module) -> None:
    """Every adapter of every layer active: diffusers' `add_adapter` activates only the new one, and Difference's
    copy machine must stay applied under the new network."""
    _set_active([m for m in module.modules() if isinstance(m, BaseTunerLayer)],
                lambda layer: layer._all_available_adapter_names())


def _set_active(layers: list[BaseTunerLayer], names: Callable[[BaseTunerLayer], list[str]]) -> None:
    """Each layer's active adapters set to `names(layer)`, keeping which weights train: peft's `set_adapter` would
    make every active adapter trainable (a frozen copy machine included)."""
    trainable = {p: p.requires_grad for layer in layers for p in layer.parameters()}
    for layer in layers:
        layer.set_adapter(names(layer))
    for p, flag in trainable.items():
        p.requires_grad_(flag)


def adapter_layers(module: torch.nn.Module, adapter: str = ADAPTER) -> dict[str, tuple[NetworkType, Any]]:
    """{module path: (network type, peft tuner layer)} of the layers that hold `adapter`."""
    out = {}
    for path, layer in module.named_modules():
        net = type_of_layer(layer, adapter) if isinstance(layer, BaseTunerLayer) else None
        if net is not None:
            out[path] = (net, layer)
    return out


def _layer_tensors(net: NetworkType, layer: Any, adapter: str) -> Iterator[tuple[str, torch.nn.Parameter]]:
    """(peft key, parameter) of one layer's adapter: a ParameterDict entry or the weight of a sub-layer."""
    for key in net.peft_keys:
        holder = getattr(layer, key, {})
        if adapter in holder:
            value = holder[adapter]
            yield key, value.weight if isinstance(value, torch.nn.Module) else value


def network_parameters(module: torch.nn.Module, adapter: str = ADAPTER) -> list[torch.nn.Parameter]:
    """The trainable parameters of a component's network (empty without one), through the registered layers."""
    return [p for net, layer in adapter_layers(module, adapter).values() for _, p in _layer_tensors(net, layer, adapter)]


def read_state(parts: ModelParts, adapter: str = ADAPTER) -> dict[str, ModuleState]:
    """{`<component>.<module path>`: module state} of the attached network, alpha (and rank) from each layer."""
    state = {}
    for attr, module in components(parts):
        for path, (net, layer) in adapter_layers(module, adapter).items():
            tensors: ModuleState = {k: p.detach() for k, p in _layer_tensors(net, layer, adapter)}
            rank, alpha = net.layer_rank_alpha(layer, adapter)
            tensors["alpha"] = scalar(alpha)
            if net.needs_rank:
                tensors["rank"] = scalar(rank)
            state[f"{attr}.{path}"] = tensors
    return state


def write_state(parts: ModelParts, state: dict[str, ModuleState], adapter: str = ADAPTER) -> list[tuple[str, str]]:
    """Copy module states into the attached network; returns the (module path, problem) pairs (module missing,
    shape or alpha differs) instead of copying a misfit."""
    layers = {f"{attr}.{p}": v for attr, m in components(parts) for p, v in adapter_layers(m, adapter).items()}
    problems = []
    for path, tensors in state.items():
        if path not in layers:
            problems.append((path, "in the file but not in the network"))
            continue
        net, layer = layers[path]
        rank, alpha = net.layer_rank_alpha(layer, adapter)
        tensors = net.fit_state(tensors, rank, alpha)
        if abs(float(tensors["alpha"]) - alpha) > 1e-6 or ("rank" in tensors and int(tensors["rank"]) != rank):
            problems.append((path, f"file has alpha {float(tensors['alpha']):g}, network has {alpha:g}"))
            continue
        own = dict(_layer_tensors(net, layer, adapter))
        keys = set(tensors) - {"alpha", "rank"}
        if keys != set(own) or any(own[k].shape != tensors[k].shape for k in keys):
            problems.append((path, f"file has {_shapes(tensors)}, network has {_shapes(own)}"))
            continue
        with torch.no_grad():
            for k in keys:
                own[k].copy_(tensors[k].to(own[k]))
    return problems


def _shapes(tensors: dict[str, torch.Tensor]) -> str:
    return ", ".join(f"{k} {tuple(v.shape)}" for k, v in sorted(tensors.items()) if k not in ("alpha", "rank"))


def summary(parts: ModelParts, adapter: str = ADAPTER) -> tuple[NetworkType, ModuleSummary]:
    """The network's type and its modules' ranks/alphas/options, read from the trained layers (for metadata)."""
    from .targets import describe, kohya_block_args  # lazy: targets imports this module

    found: NetworkType | None = None
    linear, conv, options, unet = [], [], {}, {}
    for attr, module in components(parts):
        config = (getattr(module, "peft_config", None) or {}).get(adapter)
        for path, (net, layer) in adapter_layers(module, adapter).items():
            found = net
            base = layer.get_base_layer()
            is_conv = isinstance(base, torch.nn.Conv2d) and tuple(base.kernel_size) != (1, 1)
            rank_alpha = (net.file_rank_alpha or net.layer_rank_alpha)(layer, adapter)
            (conv if is_conv else linear).append(rank_alpha)
            if attr == "unet":
                unet[path] = rank_alpha
            options.update(net.layer_options(layer, config, adapter))
    if found is None:
        raise LorakitError("the model has no network attached")
    blocks = kohya_block_args(describe(parts.family, parts.unet, []), unet) if unet else {}
    return found, ModuleSummary(linear=linear, conv=conv, options=options, block_args=blocks)


def tuner_layers(parts: ModelParts) -> list[BaseTunerLayer]:
    """Every peft tuner layer of the UNet and the text encoders."""
    return [layer for _, module in components(parts) for layer in module.modules()
            if isinstance(layer, BaseTunerLayer)]


def adapter_tensors(parts: ModelParts) -> dict[str, torch.nn.Parameter]:
    """Every adapter parameter of every attached network, trained or frozen (Difference's copy machine), by
    `<component>.<parameter path>`: what a checkpoint saves. The base model's weights (`base_layer`) are not."""
    out = {}
    for attr, module in components(parts):
        for path, layer in module.named_modules():
            if isinstance(layer, BaseTunerLayer):
                out |= {f"{attr}.{path}.{name}": p for name, p in layer.named_parameters()
                        if not name.startswith("base_layer.")}
    return out


@contextmanager
def adapter_weights(parts: ModelParts, weights: dict[str, float]) -> Iterator[None]:
    """Within the block, each named adapter at the given weight: 0 = off (not computed at all: the base model, for
    DoRA too), 1 = as trained, −1 = the opposite; adapters not named stay as they are, and so does which weights
    train."""
    layers = tuner_layers(parts)
    active = {layer: list(layer.active_adapters) for layer in layers}
    scaling = {layer: dict(getattr(layer, "scaling", {})) for layer in layers}
    try:
        _set_active(layers, lambda layer: [a for a in active[layer] if weights.get(a, 1.0) != 0])
        for layer in layers:
            for name, w in weights.items():
                if name in scaling[layer] and w != 0:
                    layer.scaling[name] = scaling[layer][name] * w
        yield
    finally:
        _set_active(layers, lambda layer: active[layer])
        for layer in layers:
            if scaling[layer]:
                layer.scaling.update(scaling[layer])


def freeze_adapter(parts: ModelParts, adapter: str) -> None:
    """Keep `adapter` applied but stop training it (Difference's copy machine during pass 2): no gradients, and
    no dropout of any kind while the model trains another network, so the frozen network is the same at every
    step."""
    for _, module in components(parts):
        for p in network_parameters(module, adapter):
            p.requires_grad_(False)
            p.grad = None
        remove_dropout(module, adapter)
