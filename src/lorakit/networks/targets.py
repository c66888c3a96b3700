"""Target selection: which UNet and text-encoder modules get an adapter, with which rank and alpha.

The rules are kohya sd-scripts' (`networks/lora.py`), TrainTrain's and LyCORIS's, applied to module lists:

- UNet, every network type: each `nn.Linear` and 1×1 `nn.Conv2d` inside a `Transformer2DModel` (proj_in,
  attn1/attn2 to_q/to_k/to_v/to_out.0, ff.net.0.proj, ff.net.2, proj_out), at network_dim / network_alpha.
- UNet, LoCon/LoHa/LoKr (kohya's conv_dim, TrainTrain's c3lier and loha, LyCORIS's preset): also the layers of
  `ResnetBlock2D`, `Downsample2D` and `Upsample2D`. Their 3×3 convolutions (conv1, conv2, the samplers' conv) get
  conv_dim / conv_alpha (0 or unset: network_dim / network_alpha, as TrainTrain); their Linear and 1×1 layers
  (time_emb_proj, conv_shortcut) get network_dim / network_alpha, as in kohya. conv_in, conv_out and the time
  embeddings are never chosen by default: sd-scripts does not build them and drops them silently on load.
- Text encoders (when trained): each Linear in `CLIPAttention` / `CLIPMLP` (q/k/v/out_proj, fc1, fc2).
- `target_modules` / `text_encoder_target_modules`, when not empty, replace those module sets by a suffix match
  over every Linear/Conv2d of the component (as before this module existed); the other settings still narrow it.
- `blocks` (TrainTrain's "network blocks"): only modules in the listed blocks; "BASE" is the text encoders.
- `network_element` (TrainTrain): cross_attention = only attn2's layers, self_attention = only attn1's (UNet).
- `block_dims` / `block_alphas` (kohya): rank/alpha per block of the UNet's Linear/1×1 layers in kohya's order
  (25 values for SD1/SD2, 23 for SDXL, see `kohya_block_layout`); a 0 dim leaves the block's Linear/1×1 layers
  untrained. `conv_block_dims` / `conv_block_alphas` do the same for the 3×3 convolutions; without them every
  block's convolutions keep conv_dim / conv_alpha, a block_dims 0 included (sd-scripts' `get_block_dims_and_alphas`
  and `LoRANetwork.create_modules`). As in sd-scripts, block_alphas and conv_block_dims count only with block_dims,
  conv_block_alphas only with conv_block_dims; lorakit refuses them alone instead of ignoring them.

`select_targets` is pure over a `ModelInfo` (module lists with block, element and kohya block index); `describe`
builds one from loaded or meta-device modules, `model_skeleton` from configs alone (no weights) for `lorakit plan`.
`selection_findings` checks a config without torch (for `config validate`). `kohya_block_args` writes the trained
per-block ranks back as sd-scripts' network args for the saved file's `ss_network_args`.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..config.schema import LorakitConfig, NetworkSection
from ..errors import ConfigError
from ..families.names import (BASE, BUILTIN_MODELS, FAMILY_BLOCKS, RANDOM_MODELS, TINY_MODELS, canonical_block,
                              family_of_unet_config)

UNET_CLASSES = ("Transformer2DModel",)
UNET_CONV_CLASSES = ("ResnetBlock2D", "Downsample2D", "Upsample2D")
TE_CLASSES = ("CLIPAttention", "CLIPSdpaAttention", "CLIPMLP")
CONV_NETWORKS = ("locon", "loha", "lokr")  # network types that adapt the resnets' and samplers' 3×3 convolutions
NO_ELEMENT_NETWORKS = ("loha",)  # TrainTrain: "network element … does not work with loha"

Targets = dict[str, tuple[int, float]]  # {module path: (rank, alpha)} of one component
BLOCK_ARGS = ("block_dims", "block_alphas", "conv_block_dims", "conv_block_alphas")  # kohya's per-block lists


@dataclass(frozen=True)
class Candidate:
    """One Linear/Conv2d layer a network may adapt."""

    path: str
    kind: str  # "linear", "conv1x1" or "conv" (a k×k convolution, k > 1)
    owner: str  # class name of the kohya target module it sits in ("" when in none)
    block: str | None = None  # "IN04", "MID", "OUT11", "BASE" (text encoders) or None (outside every block)
    element: str | None = None  # "cross_attention", "self_attention" or None
    slot: int | None = None  # index into kohya's block_dims (None: outside every block)


@dataclass(frozen=True)
class ModelInfo:
    """What target selection needs to know about a model: its families' block names and its layers."""

    family: str
    block_names: tuple[str, ...]  # the family's full-size block names (a tiny model uses a subset)
    sgm_names: bool  # kohya names the UNet in the original (SGM) layout: kohya's SDXL block_dims layout
    unet: tuple[Candidate, ...]
    text_encoder_attrs: tuple[str, ...]
    text_encoders: tuple[tuple[Candidate, ...], ...]


@dataclass
class TargetPlan:
    """The chosen modules: {path: (rank, alpha)} for the UNet and for each text encoder (empty: not adapted)."""

    unet: Targets
    text_encoders: list[Targets]
    info: ModelInfo | None = field(default=None, repr=False)

    def components(self) -> dict[str, Targets]:
        """{"unet": …, "text_encoder": …, "text_encoder_2": …}: the shape `networks.attach.attach_network` takes."""
        attrs = self.info.text_encoder_attrs if self.info else tuple(
            "text_encoder" + (f"_{i + 1}" if i else "") for i in range(len(self.text_encoders)))
        return {"unet": dict(self.unet), **{a: dict(t) for a, t in zip(attrs, self.text_encoders)}}

    def total(self) -> int:
        """How many modules get an adapter."""
        return len(self.unet) + sum(len(t) for t in self.text_encoders)


# -- block names and kohya's block_dims layout (torch-free) --------------------------------------------------------

def block_names_for(ins: int, outs: int | None = None) -> tuple[str, ...]:
    """("BASE", "IN00", …, "MID", "OUT00", …) for a UNet with `ins` input and `outs` output blocks."""
    outs = ins if outs is None else outs
    return (BASE, *(f"IN{i:02d}" for i in range(ins)), "MID", *(f"OUT{i:02d}" for i in range(outs)))


def kohya_block_layout(block_names: tuple[str, ...], sgm_names: bool) -> tuple[str, ...]:
    """Names of kohya's block_dims entries, in order.

    sd-scripts' SD1/SD2 network has one entry per block (IN00–IN11, MID, OUT00–OUT11: 25). Its SDXL network
    (`get_block_index` on SGM names) has 23: the time embedding, IN00–IN08, the three children of the middle block
    (resnet, attention, resnet), OUT00–OUT08 and the output layers; the first and last never hold a LoRA.
    """
    ins = tuple(b for b in block_names if b.startswith("IN"))
    outs = tuple(b for b in block_names if b.startswith("OUT"))
    if not sgm_names:
        return (*ins, "MID", *outs)
    return ("time_embed", *ins, "middle_block.0", "middle_block.1", "middle_block.2", *outs, "out")


_SD_SLOT = re.compile(r"(up|down)_blocks_(\d+)_(resnets|upsamplers|downsamplers|attentions)_(\d+)_")


def kohya_slot(kohya_name: str, layout: tuple[str, ...], sgm_names: bool) -> int | None:
    """Index of a kohya UNet module name in kohya's block_dims (sd-scripts' `get_block_index`), None outside."""
    name = kohya_name.removeprefix("lora_unet_")
    if sgm_names:
        for prefix, base in (("input_blocks_", 1), ("middle_block_", layout.index("middle_block.0")),
                             ("output_blocks_", layout.index("middle_block.2") + 1)):
            if name.startswith(prefix):
                return base + int(name[len(prefix):].split("_")[0])
        return None
    m = _SD_SLOT.search(name)
    per_level = 3  # kohya counts SD1/SD2 levels as 3 blocks: two resnet(+attention) blocks and a sampler block
    if m:
        level, kind, index = int(m.group(2)), m.group(3), int(m.group(4))
        idx = per_level * level + (2 if kind in ("upsamplers", "downsamplers") else index)
        return 1 + idx if m.group(1) == "down" else layout.index("MID") + 1 + idx
    return layout.index("MID") if name.startswith("mid_block_") else None


def is_block_name(name: str) -> bool:
    """Whether `name` is spelled as a block name of some family: BASE, MID, INnn or OUTnn."""
    return name in (BASE, "MID") or re.fullmatch(r"(IN|OUT)\d\d", name) is not None


# -- describing a model -------------------------------------------------------------------------------------------

def _kind(module: Any) -> str | None:
    """'linear', 'conv1x1', 'conv' (k×k) or None for a layer no network adapts."""
    import torch

    if isinstance(module, torch.nn.Linear):
        return "linear"
    if isinstance(module, torch.nn.Conv2d):
        return "conv1x1" if tuple(module.kernel_size) == (1, 1) else "conv"
    return None


def _layers(root: Any, classes: tuple[str, ...]) -> list[tuple[str, str, str]]:
    """(path, kind, owner class) of every Linear/Conv2d of `root`; owner is the nearest enclosing module whose class
    is in `classes` ("" when none), as kohya walks `named_modules` of each target-class module. A peft-adapted
    layer counts under its own path (its base layer), so an adapted model describes as the model it was."""
    from ..families.unet_layout import base_layers

    # (path prefix, class) of target-class modules in pre-order: the last one that encloses a layer is the nearest
    owners = [(path + ".", type(m).__name__) for path, m in root.named_modules() if type(m).__name__ in classes]
    out = []
    for path, module in base_layers(root).items():
        kind = _kind(module)
        if kind:
            owner = next((c for prefix, c in reversed(owners) if path.startswith(prefix)), "")
            out.append((path, kind, owner))
    return out


def describe(family: Any, unet: Any, text_encoders: list[Any]) -> ModelInfo:
    """A `ModelInfo` of a family's UNet and text encoders (loaded, tiny or on the meta device; not yet adapted)."""
    sgm = bool(getattr(family, "kohya_sgm_names", False))
    names = tuple(family.block_names())
    layout = kohya_block_layout(names, sgm)
    kohya = family.kohya_unet_names(unet)
    unet_layers = tuple(
        Candidate(path, kind, owner, family.unet_block(path, unet), family.unet_element(path),
                  kohya_slot(kohya[path], layout, sgm) if path in kohya else None)
        for path, kind, owner in _layers(unet, UNET_CLASSES + UNET_CONV_CLASSES))
    tes = tuple(tuple(Candidate(p, k, o, BASE) for p, k, o in _layers(te, TE_CLASSES)) for te in text_encoders)
    return ModelInfo(family.name, names, sgm, unet_layers, tuple(family.text_encoder_attrs), tes)


def describe_parts(parts: Any) -> ModelInfo:
    """`describe` of a loaded `ModelParts`."""
    return describe(parts.family, parts.unet, list(parts.text_encoders))


def model_skeleton(model_cfg: Any) -> ModelInfo:
    """A `ModelInfo` without reading any weights: the tiny model as built, any other model's UNet and text encoders
    built on the meta device from its configs (a diffusers folder's, else the shipped ones its family uses)."""
    import torch

    from ..families import detect_family, get_family
    from ..families.single_file import default_arch, shipped_config

    family = get_family(detect_family(model_cfg))
    source = model_cfg.pretrained_model_name_or_path
    if source in TINY_MODELS:  # real weights, but tiny (a tenth of a second); its scheduler cannot be built on meta
        pipe = family.build_tiny()
        return describe(family, pipe.unet, [getattr(pipe, a) for a in family.text_encoder_attrs])
    folder = Path(source).expanduser()
    if source in RANDOM_MODELS:
        folder = shipped_config(RANDOM_MODELS[source][1])
    elif not folder.is_dir():  # a single-file checkpoint: the architecture its family loads it with
        folder = shipped_config(default_arch(family.name, model_cfg.v_parameterization))
    with torch.device("meta"):
        unet = _meta_component(folder, "unet")
        tes = [_meta_component(folder, a) for a in family.text_encoder_attrs]
    return describe(family, unet, tes)


def _meta_component(folder: Path, attr: str) -> Any:
    """One pipeline component built from `<folder>/<attr>/config.json` (call under `torch.device("meta")`)."""
    import diffusers
    import transformers

    index = json.loads((folder / "model_index.json").read_text(encoding="utf-8"))
    library, cls_name = index[attr]
    if library == "diffusers":
        cls = getattr(diffusers, cls_name)
        return cls.from_config(cls.load_config(folder / attr))
    cls = getattr(transformers, cls_name)
    return cls(cls.config_class.from_pretrained(folder / attr))


# -- selection ------------------------------------------------------------------------------------------------------

def _suffix_match(path: str, suffixes: list[str]) -> bool:
    """peft's and lorakit's old rule: the path is a suffix or ends with '.' + suffix."""
    return any(path == s or path.endswith("." + s) for s in suffixes)


def conv_rank_alpha(cfg: NetworkSection) -> tuple[int, float]:
    """(rank, alpha) of 3×3 convolutions: conv_dim / conv_alpha, 0 or unset = network_dim / network_alpha."""
    return cfg.conv_dim or cfg.network_dim, cfg.conv_alpha or cfg.network_alpha


def _check_suffixes(candidates: tuple[Candidate, ...], suffixes: list[str], key: str) -> list[str]:
    """A suffix that matches no layer of the component (a typo) is a problem, as before."""
    missing = [s for s in suffixes if not any(_suffix_match(c.path, [s]) for c in candidates)]
    return [f"network.{key}: no module matches {missing}; e.g. to_q, to_k, to_v, to_out.0, proj_in, ff.net.2, "
            "conv1 (or leave it empty for kohya's module set)"] if missing else []


def _at(values: list[Any], slot: int | None, default: Any) -> Any:
    """A per-block value (kohya's block_dims and kin) for a layer in `slot`, or `default` when the list is unset or
    the layer sits outside every block."""
    return values[slot] if values and slot is not None else default


def _rank_alpha(c: Candidate, cfg: NetworkSection) -> tuple[int, float]:
    """(rank, alpha) of one UNet layer by sd-scripts' rules: a 3×3 convolution takes conv_block_dims/alphas, else
    conv_dim/alpha in every block (block_dims never applies to it); a Linear/1×1 layer takes block_dims/alphas,
    else network_dim/alpha."""
    if c.kind == "conv":
        rank, alpha = conv_rank_alpha(cfg)
        return _at(cfg.conv_block_dims, c.slot, rank), _at(cfg.conv_block_alphas, c.slot, alpha)
    return _at(cfg.block_dims, c.slot, cfg.network_dim), _at(cfg.block_alphas, c.slot, cfg.network_alpha)


def _unet_choice(info: ModelInfo, cfg: NetworkSection, problems: list[str]) -> Targets:
    """The UNet's targets: kohya's classes (or the suffix filter), narrowed by blocks, element and the per-block
    dims (a rank of 0 is kohya's "not trained")."""
    conv_on = cfg.network_module in CONV_NETWORKS
    classes = UNET_CLASSES + (UNET_CONV_CLASSES if conv_on else ())
    blocks = set(cfg.blocks)
    if cfg.target_modules:
        problems += _check_suffixes(info.unet, cfg.target_modules, "target_modules")
    out: Targets = {}
    for c in info.unet:
        chosen = _suffix_match(c.path, cfg.target_modules) if cfg.target_modules else c.owner in classes
        if not chosen or (blocks and c.block not in blocks):
            continue
        if cfg.network_element != "full" and c.element != cfg.network_element:
            continue
        rank, alpha = _rank_alpha(c, cfg)
        if rank:
            out[c.path] = (rank, alpha)
    return out


def _te_choice(info: ModelInfo, cfg: NetworkSection, problems: list[str]) -> list[Targets]:
    """Each text encoder's targets: CLIP attention and MLP layers (or the suffix filter) when it is trained."""
    trained = cfg.train_text_encoder and (not cfg.blocks or BASE in cfg.blocks)
    out = []
    for te in info.text_encoders:
        if not trained:
            out.append({})
            continue
        suffixes = cfg.text_encoder_target_modules
        if suffixes:
            problems += _check_suffixes(te, suffixes, "text_encoder_target_modules")
        chosen = [c for c in te if (_suffix_match(c.path, suffixes) if suffixes else c.owner in TE_CLASSES)]
        out.append({c.path: (cfg.network_dim, cfg.network_alpha) for c in chosen})
    return out


def select_targets(model: Any, cfg: NetworkSection) -> TargetPlan:
    """Which modules of `model` (a `ModelInfo` or a loaded `ModelParts`) get an adapter, with (rank, alpha).

    Raises ConfigError for settings the model cannot satisfy (block names, block_dims length, suffixes that match
    nothing, a selection that leaves nothing to train). Pure over a ModelInfo.
    """
    info = model if isinstance(model, ModelInfo) else describe_parts(model)
    problems = [f"{k}: {m}" for k, m in network_problems(cfg, info.family, info.block_names, info.sgm_names)]
    if problems:  # block names / lengths are wrong: selecting with them would only add confusing errors
        raise ConfigError(problems)
    plan = TargetPlan(_unet_choice(info, cfg, problems), _te_choice(info, cfg, problems), info)
    if not problems and plan.total() == 0:
        problems.append(f"network: no module is selected for a {info.family} model (blocks {cfg.blocks or 'all'}, "
                        f"network_element {cfg.network_element}, block_dims {cfg.block_dims or 'unset'}, "
                        f"conv_block_dims {cfg.conv_block_dims or 'unset'}); "
                        "widen the selection")
    if problems:
        raise ConfigError(problems)
    return plan


# -- validation (torch-free) ----------------------------------------------------------------------------------------

def _span(names: tuple[str, ...] | list[str]) -> str:
    """'BASE, IN00–IN11, MID, OUT00–OUT11': runs of numbered names shortened."""
    out: list[str] = []
    run: list[str] = []

    def flush() -> None:
        if run:
            out.append(run[0] if len(run) == 1 else f"{run[0]}–{run[-1]}")
            run.clear()

    for name in names:
        m = re.fullmatch(r"([A-Za-z_.]+?)(\d+)", name)
        prev = re.fullmatch(r"([A-Za-z_.]+?)(\d+)", run[-1]) if run else None
        if m and prev and m.group(1) == prev.group(1) and int(m.group(2)) == int(prev.group(2)) + 1:
            run.append(name)
            continue
        flush()
        if m:
            run.append(name)
        else:
            out.append(name)
    flush()
    return ", ".join(out)


def network_problems(cfg: NetworkSection, family: str | None, block_names: tuple[str, ...] | None,
                     sgm_names: bool = False) -> list[tuple[str, str]]:
    """(key, message) of what is wrong with the network selection for a family (None: unknown, only the
    family-free rules)."""
    problems = []
    if cfg.network_element != "full" and cfg.network_module in NO_ELEMENT_NETWORKS:
        problems.append(("network.network_element", f"'{cfg.network_element}' does not work with network_module "
                         f"'{cfg.network_module}' (as in TrainTrain); use 'full' or another network type"))
    conv_keys = [k for k in ("conv_dim", "conv_alpha", "conv_block_dims", "conv_block_alphas") if getattr(cfg, k)]
    if conv_keys and cfg.network_module not in CONV_NETWORKS:
        problems.append((f"network.{conv_keys[0]}", f"is set, but network_module '{cfg.network_module}' adapts no 3×3 convolutions; use "
                         "network_module = 'locon' (kohya's networks.lora with conv_dim, TrainTrain's c3lier), "
                         "'loha' or 'lokr'"))
    problems += _block_arg_pairs(cfg)
    if BASE in cfg.blocks and not cfg.train_text_encoder:
        problems.append(("network.blocks", "lists BASE (the text encoders) but network.train_text_encoder is "
                         "false; set it to true or drop BASE"))
    if cfg.blocks and BASE not in cfg.blocks and cfg.train_text_encoder:
        problems.append(("network.blocks", "does not list BASE (the text encoders) but "
                         "network.train_text_encoder is true; add BASE or set train_text_encoder = false"))
    if block_names is None:
        return problems
    unknown = [b for b in cfg.blocks if b not in block_names]
    if unknown:
        problems.append(("network.blocks", f"{', '.join(unknown)}: not a block of {family or 'this model'}; "
                         f"valid: {_span(block_names)}"))
    layout = kohya_block_layout(block_names, sgm_names)
    for key in BLOCK_ARGS:
        values = getattr(cfg, key)
        if values and len(values) != len(layout):
            problems.append((f"network.{key}", f"has {len(values)} values; {family or 'this model'} needs "
                             f"{len(layout)}, one per block as sd-scripts counts them: {_span(layout)}"))
    return problems


def _block_arg_pairs(cfg: NetworkSection) -> list[tuple[str, str]]:
    """Per-block lists that sd-scripts reads only beside another (`create_network`: block_alphas and the conv lists
    only when block_dims is given; `get_block_dims_and_alphas`: conv_block_alphas only with conv_block_dims). It
    ignores them alone; lorakit refuses them, so the same settings never train differently here."""
    needs = (("block_alphas", "block_dims"), ("conv_block_dims", "block_dims"),
             ("conv_block_alphas", "conv_block_dims"))
    return [(f"network.{key}", f"is set without {other}: sd-scripts reads {key} only together with {other} and "
             f"ignores it alone; set {other} too (network_dim / conv_dim in every block keeps today's ranks) or "
             f"drop {key}") for key, other in needs if getattr(cfg, key) and not getattr(cfg, other)]


def family_hint(model_cfg: Any) -> str | None:
    """The model's family without torch: the setting, a built-in name, or a diffusers folder's UNet config;
    None when only loading would tell (a single-file checkpoint)."""
    if model_cfg.family != "auto":
        return model_cfg.family
    source = model_cfg.pretrained_model_name_or_path
    if source in BUILTIN_MODELS:
        return BUILTIN_MODELS[source]
    config = Path(source).expanduser() / "unet" / "config.json"
    try:
        return family_of_unet_config(json.loads(config.read_text(encoding="utf-8")))
    except (OSError, ValueError):
        return None


def selection_findings(cfg: LorakitConfig) -> list[Any]:
    """`config validate`'s findings on the network selection (no torch): block names and kohya block_dims
    lengths for the model's family, network_element with LoHa, conv settings, BASE vs the text encoder."""
    from ..config.validate import Finding

    family = family_hint(cfg.model)
    if family in FAMILY_BLOCKS:
        count, sgm = FAMILY_BLOCKS[family]
        problems = network_problems(cfg.network, family, block_names_for(count), sgm)
    else:  # unknown until loaded: check against every family's names; `select_targets` checks the rest
        problems = network_problems(cfg.network, None, None)
        names = set().union(*(block_names_for(n) for n, _ in FAMILY_BLOCKS.values()))
        unknown = [b for b in cfg.network.blocks if b not in names]
        if unknown:
            problems.append(("network.blocks", f"{', '.join(unknown)}: not a block of any family; valid: "
                             f"{_span(block_names_for(max(n for n, _ in FAMILY_BLOCKS.values())))}"))
    found = [Finding(key, message) for key, message in problems]
    if BASE in cfg.network.blocks and cfg.mode.type in ("ileco", "difference"):
        found.append(Finding("network.blocks", f"BASE (the text encoders) is not trained in mode "
                                               f"'{cfg.mode.type}' (as in TrainTrain); drop BASE"))
    return found


# -- the saved file's network args -------------------------------------------------------------------------------------

def _most_common(values: list[tuple[int, float]]) -> tuple[int, float]:
    """The most common (rank, alpha); ties go to the first seen."""
    return Counter(values).most_common(1)[0][0]


def _per_block(info: ModelInfo, unet: Targets, conv: bool, classes: tuple[str, ...],
               size: int) -> tuple[list[list[tuple[int, float]]], bool]:
    """(trained (rank, alpha) per kohya slot, uneven) for the UNet's 3×3 convolutions (`conv`) or its Linear/1×1
    layers. Uneven: blocks differ in their common (rank, alpha), or a block that has such layers in the adapted
    classes has none trained — what only per-block dims express."""
    per_slot: list[list[tuple[int, float]]] = [[] for _ in range(size)]
    holders = set()
    for c in info.unet:
        if c.slot is None or (c.kind == "conv") != conv:
            continue
        if c.path in unet:
            per_slot[c.slot].append(unet[c.path])
        if c.owner in classes:
            holders.add(c.slot)
    # each block's common value: a LoKr module with two full halves states alpha = rank in the file, so modules
    # of one block may differ without any per-block setting
    trained = {_most_common(values) for values in per_slot if values}
    return per_slot, len(trained) > 1 or any(not per_slot[s] for s in holders)


def _block_strings(per_slot: list[list[tuple[int, float]]], fallback: float) -> tuple[str, str]:
    """("dims", "alphas") comma-separated as users pass them; a block with nothing trained is dim 0 (kohya's "not
    trained"), with the network's common alpha."""
    pairs = [_most_common(values) if values else (0, fallback) for values in per_slot]
    return ",".join(str(r) for r, _ in pairs), ",".join(f"{a:g}" for _, a in pairs)


def kohya_block_args(info: ModelInfo, unet: Targets) -> dict[str, str]:
    """sd-scripts' per-block network args for `ss_network_args`, read from the trained UNet modules
    {path: (rank, alpha)} (paths as in `info`): block_dims / block_alphas when the Linear/1×1 layers are not one
    rank/alpha in every block that has them, conv_block_dims / conv_block_alphas likewise for the 3×3
    convolutions (with block_dims too: sd-scripts reads them only beside it). Values are strings as sd-scripts
    writes the network_args a user passed ("0,8,8,…", one per slot of `kohya_block_layout`); {} when uniform.
    """
    layout = kohya_block_layout(info.block_names, info.sgm_names)
    where = {c.path: c for c in info.unet}
    if not any(where[p].slot is not None for p in unet if p in where):
        return {}  # nothing trained inside a block: no per-block statement to make
    conv_classes = any(where[p].owner in UNET_CONV_CLASSES for p in unet if p in where)
    classes = UNET_CLASSES + (UNET_CONV_CLASSES if conv_classes else ())
    lin, lin_uneven = _per_block(info, unet, False, classes, len(layout))
    conv, conv_uneven = _per_block(info, unet, True, classes, len(layout))
    out: dict[str, str] = {}
    if lin_uneven or conv_uneven:
        lin_pairs = [v for values in lin for v in values]
        fallback = _most_common(lin_pairs or list(unet.values()))[1]
        out["block_dims"], out["block_alphas"] = _block_strings(lin, fallback)
    if conv_uneven:
        fallback = _most_common([v for values in conv for v in values] or list(unet.values()))[1]
        out["conv_block_dims"], out["conv_block_alphas"] = _block_strings(conv, fallback)
    return out


# -- the plan's table -------------------------------------------------------------------------------------------------

def _ranks(values: list[tuple[int, float]]) -> str:
    """'16/8' or '16/8 ×12, 4/1 ×4': rank/alpha groups, most common first."""
    counts: dict[tuple[int, float], int] = {}
    for v in values:
        counts[v] = counts.get(v, 0) + 1
    groups = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    if len(groups) == 1:
        return f"{groups[0][0][0]}/{groups[0][0][1]:g}"
    return ", ".join(f"{r}/{a:g} ×{n}" for (r, a), n in groups)


def render_targets(plan: TargetPlan, network: str) -> list[str]:
    """The plan's compact table: one row per component and block with its module count and rank/alpha groups."""
    info = plan.info
    order = {b: i for i, b in enumerate(info.block_names)} if info else {}
    blocks = {c.path: c.block for c in info.unet} if info else {}
    rows: list[tuple[str, str, list[tuple[int, float]]]] = []
    by_block: dict[str | None, list[tuple[int, float]]] = {}
    for path, ra in plan.unet.items():
        by_block.setdefault(blocks.get(path), []).append(ra)
    for block in sorted(by_block, key=lambda b: (b is None, order.get(b, len(order)), b or "")):
        rows.append(("unet", block or "—", by_block[block]))
    attrs = plan.components()
    for attr, targets in list(attrs.items())[1:]:
        if targets:
            rows.append((attr, BASE, list(targets.values())))
    lines = [f"network: {network}, {plan.total()} modules adapted (component, block, modules, rank/alpha):"]
    lines += [f"  {comp:<15} {block:<6} {len(ras):>5}  {_ranks(ras)}" for comp, block, ras in rows]
    return lines
