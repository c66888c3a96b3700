"""kohya network settings → lorakit's `network` section, read the way kohya_ss, sd-scripts and LyCORIS read them.

What each tool does with the settings (read from their code, not copied): kohya_ss `kohya_gui/lora_gui.py`
`train_model` turns `LoRA_type` and the GUI's own keys into sd-scripts' `network_module` + `network_args`;
sd-scripts `networks/lora.py` `create_network` reads conv_dim/conv_alpha (conv_alpha absent = 1), block_dims /
block_alphas (25 values, 23 for SDXL), conv_block_dims / conv_block_alphas (only with block_dims; 3×3 convs per
block, conv_dim everywhere without them), *_lr_weight, rank/module_dropout, loraplus_*; LyCORIS
`lycoris/kohya.py` `create_network` reads algo (default lora), preset (default full), conv_dim/conv_alpha
(absent = network_dim/alpha; "0" turns the convolutions off), dora_wd, factor, … and booleans as "anything but
'false'". sd-scripts and LyCORIS both treat an alpha of 0 as "alpha = rank".

Every source key ends up mapped, inert (in `mapped` with "(inert: …)"), off (`empty`) or unmapped with a reason;
a value lorakit cannot take is unmapped on its own and never fails the whole import.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from .import_network_tables import (TRANSFORMER, PRESETS, PRESET_REASONS, EXTRA_FULL, ALGOS, ALGO_REASONS,
                                    MODULE_REASONS, OTHER_FAMILY, GUI_LYCORIS, GUI_MODULES, GUI_LYCORIS_ARGS,
                                    GUI_KOHYA_ARGS, LORAPLUS, NETWORK_KEYS, MAX_DIM, WIDTHS, UNSUPPORTED_ARGS,
                                    LYCORIS_ALIASES, INERT_ARGS, DROPOUT_ARGS, LYCORIS_RANK_DROPOUT,
                                    LYCORIS_NEURON_DROPOUT)
from .schema import NetworkSection

if TYPE_CHECKING:
    from .import_result import ImportResult


@dataclass
class Spec:
    """What sd-scripts receives: its network_module and network_args (as strings), with the source key of each."""

    module: str
    args: dict[str, str] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)
    label: str = "network_module"  # the source key that chose the module
    value: Any = None  # its value


@dataclass
class Net:
    """The network being built and the source keys it has accounted for."""

    r: ImportResult
    gui: bool = False
    kind: str = "lora"
    done: set[str] = field(default_factory=set)

    @property
    def values(self) -> dict[str, Any]:
        """The `network` section of the import."""
        return self.r.values.setdefault("network", {})

    def put(self, label: str, key: str, value: Any, how: str = "") -> None:
        """Set network.`key` if lorakit accepts the value on its own; else list `label` as unmapped."""
        error = field_error(key, value)
        if error:
            self.r.unmapped.append((label, value, f"network.{key}: {error}"))
        else:
            self.values[key] = value
            self.r.mapped[label] = f"network.{key}" + (f" = {value!r} ({how})" if how else "")
        self.done.add(label)

    def inert(self, label: str, why: str) -> None:
        """A key the source tool does not act on: accounted for, nothing set."""
        self.r.mapped[label] = f"(inert: {why})"
        self.done.add(label)

    def off(self, label: str) -> None:
        """A key left at its off value."""
        self.r.empty.append(label)
        self.done.add(label)

    def unmapped(self, label: str, value: Any, why: str) -> None:
        """A setting lorakit cannot reproduce."""
        self.r.unmapped.append((label, value, why))
        self.done.add(label)


def field_error(key: str, value: Any) -> str | None:
    """Why lorakit's NetworkSection refuses `key = value` on its own (None: it takes it)."""
    try:
        NetworkSection.model_validate({key: value})
    except ValidationError as exc:
        return "; ".join(e["msg"] for e in exc.errors())
    return None


def _allowed(key: str) -> str:
    """What network.`key` takes, in the loader's words."""
    from .loader import allowed  # lazy: the loader imports the importers

    return allowed(("network", key))


def _text(value: Any) -> str:
    """A GUI value as kohya_ss writes it into network_args (Python's str)."""
    return value if isinstance(value, str) else str(value)


def _lyco_bool(value: str) -> bool:
    """LyCORIS's str_bool: anything but 'false' (any case) is true."""
    return value.strip().lower() != "false"


def _off(value: str) -> bool:
    """An argument at its off value: false, 0, empty, None."""
    v = value.strip().lower()
    return v in ("", "false", "none") or _float(v) == 0


def _float(value: Any) -> float | None:
    """A number, or None."""
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _whole(value: Any) -> int | None:
    """A whole number, or None."""
    number = _float(value)
    return int(number) if number is not None and number.is_integer() else None


def kron_halves(dimension: int, factor: int) -> tuple[int, int]:
    """How LyCORIS splits a layer width for LoKr: (m, n) with m ≤ n and m·n = dimension; n is the w2 side.

    A factor that divides the width is taken as it is; otherwise m climbs through the divisors while it stays
    at most the factor (any size for -1)."""
    if factor > 0 and dimension % factor == 0:
        return min(factor, dimension // factor), max(factor, dimension // factor)
    limit = dimension if factor < 0 else factor
    m, n = 1, dimension
    while m < n:
        k = next(d for d in range(m + 1, dimension + 1) if dimension % d == 0)
        if k + dimension // k > 1 + dimension or k > limit:
            break
        m, n = k, dimension // k
    return min(m, n), max(m, n)


def lokr_full_fits(factor: int) -> bool:
    """True when rank MAX_DIM keeps every LoKr half of SD1/SD2/SDXL a full matrix, as LyCORIS's 'full
    dimension' (a dim larger than any layer) does: a half is full when rank ≥ half its larger side."""
    return all(kron_halves(w, factor)[1] <= 2 * MAX_DIM for w in WIDTHS)


def import_network(r: ImportResult, src: dict[str, Any], gui: bool) -> set[str]:
    """Map the network settings of `src` into `r`; return the source keys accounted for."""
    net = Net(r, gui)
    if gui and "LoRA_type" in src or gui and "network_module" not in src:
        spec = _gui_spec(net, src)
    else:
        spec = _args_spec(net, src)
    family = r.values.get("model", {}).get("family")
    if spec is not None:
        _apply(net, spec, src, family)
    _dropout(net, src, spec)
    for key in sorted(NETWORK_KEYS & set(src) - net.done):
        value = src[key]
        if value in ("", None, False, 0, [], {}) or key in ("network_module", "network_args"):
            net.off(key)
        elif key in ("network_dim", "network_alpha"):
            _dims(net, src)
        elif spec is None:
            r.mapped[key] = f"(not used: LoRA_type {src.get('LoRA_type')!r} is not mapped)"
        else:
            kind = src.get("LoRA_type", spec.module)
            net.inert(key, f"{'kohya_ss does not pass it' if gui else 'sd-scripts reads it only in network_args'}"
                           f" for {kind}")
    return net.done | (NETWORK_KEYS & set(src))


def _gui_spec(net: Net, src: dict[str, Any]) -> Spec | None:
    """What kohya_ss's train_model passes to sd-scripts for the GUI's LoRA_type (None: a type lorakit lacks)."""
    kind = str(src.get("LoRA_type") or "Standard")
    if kind in GUI_LYCORIS:
        algo = GUI_LYCORIS[kind]
        spec = Spec("lycoris.kohya", {"algo": algo}, {"algo": "LoRA_type"}, "LoRA_type", kind)
        passed = [(key, arg) for key, arg in GUI_LYCORIS_ARGS.get(algo, {}).items()]
    elif kind in GUI_MODULES:
        spec = Spec(GUI_MODULES[kind], label="LoRA_type", value=kind)
        passed = [(k, k) for k in (("conv_dim", "conv_alpha") if kind == "Kohya LoCon" else ())]
        passed += [(k, k) for k in GUI_KOHYA_ARGS if src.get(k)]
    else:
        reason = (OTHER_FAMILY if kind in ("Flux1", "Flux1 OFT", "HunyuanImage-2.1", "Anima", "Lumina")
                  else "not a kohya_ss LoRA type lorakit knows")
        net.unmapped("LoRA_type", kind, reason)
        return None
    passed += [(k, k) for k in LORAPLUS if src.get(k)]
    for key, arg in passed:
        if key in src:
            spec.args[arg], spec.labels[arg] = _text(src[key]), key
    return spec


def _args_spec(net: Net, src: dict[str, Any]) -> Spec:
    """sd-scripts' network_module and network_args ('key=value' strings; a GUI-style string is split)."""
    spec = Spec(str(src.get("network_module") or "networks.lora"), value=src.get("network_module"))
    raw = src.get("network_args")
    items = [str(v) for v in raw] if isinstance(raw, list) else raw.split() if isinstance(raw, str) else []
    for i, item in enumerate(items):
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            net.unmapped(f"network_args[{i}]", item, "not key=value: sd-scripts stops on it")
            continue
        spec.args[key.strip()], spec.labels[key.strip()] = value.strip().strip('"'), f"network_args.{key.strip()}"
    if items:
        net.r.mapped["network_args"] = "(each argument as network_args.<name>)"
        net.done.add("network_args")
    return spec


def _apply(net: Net, spec: Spec, src: dict[str, Any], family: str | None) -> None:
    """The network type and every argument of `spec`."""
    if spec.module == "networks.lora":
        _kohya_lora(net, spec, src, family)
    elif spec.module == "lycoris.kohya":
        _lycoris(net, spec, src, family)
    else:
        reason = MODULE_REASONS.get(spec.module, OTHER_FAMILY if spec.module.startswith("networks.lora_")
                                    else "not a network module lorakit knows")
        net.unmapped(spec.label, spec.value or spec.module, reason)
        for label in spec.labels.values():
            net.r.mapped[label] = f"(not used: {spec.module} is not mapped)"
            net.done.add(label)


def _set_type(net: Net, spec: Spec, kind: str, how: str) -> None:
    """network.network_module from the source key that chose it."""
    net.kind = kind
    if spec.value is not None:
        net.put(spec.label, "network_module", kind, how)
    else:
        net.values["network_module"] = kind


def _kohya_lora(net: Net, spec: Spec, src: dict[str, Any], family: str | None) -> None:
    """sd-scripts networks.lora: LoCon when conv_dim > 0 or conv_block_dims applies (conv_alpha absent = 1),
    per-block dims and alphas."""
    args, labels = spec.args, spec.labels
    conv = _whole(args["conv_dim"]) if "conv_dim" in args else None
    block_conv = _block_convs(args)
    _set_type(net, spec, "locon" if conv or block_conv else "lora",
              "networks.lora with conv_dim" if conv else "networks.lora with block_dims and conv_block_dims"
              if block_conv else "networks.lora without conv_dim")
    _dims(net, src)
    for arg, value in args.items():
        label = labels[arg]
        if arg == "conv_dim":
            if conv is None:
                net.unmapped(label, value, "sd-scripts reads conv_dim as a whole number")
            elif conv == 0:
                net.off(label)  # sd-scripts skips every layer of rank 0
            else:
                net.put(label, "conv_dim", conv)
        elif arg == "conv_alpha":
            if not conv and block_conv and "conv_block_alphas" not in args:
                net.unmapped(label, value, "without conv_dim sd-scripts hands conv_alpha unparsed to the blocks of "
                             "conv_block_dims and stops; set conv_block_alphas (or conv_dim)")
            elif not conv:
                net.inert(label, "sd-scripts uses conv_alpha only with conv_dim")
            else:
                _alpha(net, label, value, "conv_alpha", net.values.get("conv_dim", conv))
        elif arg in BLOCK_NEEDS:
            continue  # below, each after the list it needs
        elif arg in DROPOUT_ARGS:
            _rate(net, arg, label, value, "sd-scripts' networks.lora: LoRAModule.forward")
        elif arg in UNSUPPORTED_ARGS:
            net.off(label) if _off(value) else net.unmapped(label, value, UNSUPPORTED_ARGS[arg])
        else:
            net.inert(label, "sd-scripts' networks.lora does not read it")
    for arg in [a for a in BLOCK_NEEDS if a in args]:
        _blocks(net, args, labels, arg, family)
    takes_conv_alpha = conv or "conv_block_dims" in net.values and "conv_block_alphas" not in net.values
    if takes_conv_alpha and "conv_alpha" not in args:
        net.values["conv_alpha"] = 1.0
        net.r.notes.append("conv_alpha is not set: sd-scripts then uses 1 for the convolutions, and so does the "
                           "import (lorakit's own default would be network_alpha)")


# per-block list → the list it needs beside it (sd-scripts ignores it alone)
BLOCK_NEEDS = {"block_dims": None, "block_alphas": "block_dims", "conv_block_dims": "block_dims",
               "conv_block_alphas": "conv_block_dims"}


def _block_convs(args: dict[str, str]) -> bool:
    """Whether sd-scripts trains 3×3 convolutions through conv_block_dims (read only beside block_dims)."""
    dims = [_whole(v) for v in args.get("conv_block_dims", "").split(",")]
    return "block_dims" in args and any(dims) and None not in dims


def _blocks(net: Net, args: dict[str, str], labels: dict[str, str], arg: str, family: str | None) -> None:
    """block_dims / block_alphas / conv_block_dims / conv_block_alphas: comma-separated, 25 values (23 for SDXL);
    each counts only beside the list it needs (`BLOCK_NEEDS`, as sd-scripts' create_network reads them)."""
    label, value = labels[arg], args[arg]
    other = BLOCK_NEEDS[arg]
    while other is not None and other in args:
        other = BLOCK_NEEDS[other]  # conv_block_alphas needs conv_block_dims, which needs block_dims
    if other is not None:
        net.inert(label, f"sd-scripts reads {arg} only together with {other}")
        return
    needed = BLOCK_NEEDS[arg]
    if needed is not None and needed not in net.values:
        net.unmapped(label, value, f"{needed} is not mapped, and {arg} counts only together with it")
        return
    parse = _whole if arg.endswith("dims") else _float
    values = [parse(v) for v in value.split(",")]
    counts = {"sdxl": (23,), "sd1": (25,), "sd2": (25,)}.get(family or "", (23, 25))
    if any(v is None for v in values):
        net.unmapped(label, value, f"{arg} takes comma-separated {'whole ' if parse is _whole else ''}numbers")
    elif len(values) not in counts:
        net.unmapped(label, value, f"{len(values)} values; sd-scripts needs {' or '.join(map(str, counts))} "
                     "(25 for SD1/SD2, 23 for SDXL) and stops otherwise")
    elif arg.endswith("alphas") and len(values) != len(args[arg.replace("alphas", "dims")].split(",")):
        net.unmapped(label, value, f"{arg} needs as many values as {arg.replace('alphas', 'dims')}")
    elif arg == "conv_block_dims" and net.kind == "lora":
        net.off(label)  # every block at 0 and no conv_dim: sd-scripts trains no convolution
    else:
        if arg.endswith("alphas"):  # an alpha of 0 is the block's rank in sd-scripts
            dims = [_whole(d) for d in args[arg.replace("alphas", "dims")].split(",")]
            values = [a if a else float(d or 1) for a, d in zip(values, dims)]
        net.put(label, arg, values)


def _alpha(net: Net, label: str, value: Any, key: str, rank: int) -> None:
    """An alpha; 0 means 'alpha = rank' (no scaling) in sd-scripts and LyCORIS."""
    alpha = _float(value)
    if alpha is None or isinstance(value, bool):
        net.unmapped(label, value, f"network.{key} takes {_allowed(key)}")
    elif alpha == 0:
        net.put(label, key, float(rank), "0 = the rank in sd-scripts/LyCORIS")
    else:
        net.put(label, key, alpha)


LYCO_BOOLS = {"use_tucker", "use_scalar", "train_norm", "full_matrix", "rs_lora", "unbalanced_factorization",
              "rescaled", "bypass_mode", "rank_dropout_scale", "train_t5xxl", "dora_wd", "train_on_input"}


def _unset(net: Net, src: dict[str, Any], key: str, default: int | float, says: str) -> None:
    """An empty value is off; a key a TOML leaves out takes sd-scripts' default (a GUI file writes every key)."""
    if key in src:
        net.off(key)
    elif not net.gui:
        net.values[key] = default
        net.r.notes.append(f"{key} is not set: sd-scripts then {says}, and so does the import")


def _dims(net: Net, src: dict[str, Any], factor: int = -1) -> None:
    """network_dim / network_alpha: sd-scripts' defaults (4, 1) when a TOML leaves them out; alpha 0 = rank;
    LoKr's 'full dimension' (a dim above any layer) as rank 1024 at scale 1 when that keeps every half full."""
    if {"network_dim", "network_alpha"} <= net.done:
        return
    dim_v, alpha_v, full = src.get("network_dim"), src.get("network_alpha"), False
    dim = None if isinstance(dim_v, bool) else _whole(dim_v)
    if dim_v in ("", None):
        _unset(net, src, "network_dim", 4, "trains rank 4")
    elif dim is None:
        net.unmapped("network_dim", dim_v, f"network.network_dim takes {_allowed('network_dim')}")
    elif net.kind == "lokr" and dim > MAX_DIM:
        full = lokr_full_fits(factor)
        if full:
            net.put("network_dim", "network_dim", MAX_DIM, f"LyCORIS's 'full dimension' {dim}: every Kronecker half "
                    "is a full matrix at rank 1024 too")
        else:
            net.unmapped("network_dim", dim_v, f"LyCORIS's 'full dimension': with factor {factor} some layers need "
                         f"a rank above {MAX_DIM} for full halves; set network_dim and lokr_factor by hand")
    else:
        net.put("network_dim", "network_dim", dim)
    net.done.add("network_dim")
    if full:
        net.put("network_alpha", "network_alpha", float(MAX_DIM), "LyCORIS scales full×full halves by 1")
    elif alpha_v in ("", None):
        _unset(net, src, "network_alpha", 1.0, "uses 1")
    else:
        _alpha(net, "network_alpha", alpha_v, "network_alpha", net.values.get("network_dim", 16))
    net.done.add("network_alpha")


def _preset(net: Net, spec: Spec, name: str, conv_on: bool, family: str | None) -> None:
    """LyCORIS's preset (default 'full') as lorakit's module sets."""
    label, preset = spec.labels.get("preset"), PRESETS.get(name)
    if preset is None:
        net.unmapped(label or "preset", name, PRESET_REASONS.get(name, "a custom LyCORIS preset cannot be mapped; "
                                                                 "set network.target_modules by hand"))
        return
    _, unet, te, train_te = preset
    if unet is None and not conv_on and net.kind in ("loha", "lokr"):
        unet = TRANSFORMER  # conv_dim = 0: LyCORIS adapts no 3×3 convolution
    if net.kind == "lora" and unet == TRANSFORMER:
        unet = None  # lorakit's lora set is exactly the transformer blocks' layers
    how = []
    for key, value in (("target_modules", unet), ("text_encoder_target_modules", te),
                       ("train_text_encoder", train_te)):
        if value is not None:
            net.values[key] = value
            how.append(f"network.{key} = {value!r}")
    if label:
        net.r.mapped[label] = "; ".join(how) or f"(lorakit's {net.kind} module set)"
        net.done.add(label)
    if name in ("full", "unet-only") and family != "sdxl":
        net.r.notes.append(EXTRA_FULL.format(preset=name, kind=net.kind))


def _lycoris(net: Net, spec: Spec, src: dict[str, Any], family: str | None) -> None:
    """LyCORIS lycoris.kohya: algo → type, preset → module sets, conv, DoRA, LoKr factor; the rest listed."""
    args, labels = spec.args, spec.labels
    algo = args.get("algo", "lora").strip().lower()
    if algo not in ALGOS:
        label = labels.get("algo", spec.label)
        net.unmapped(label, spec.value if label == spec.label else args.get("algo", algo),
                     ALGO_REASONS.get(algo, f"unknown LyCORIS algo '{algo}'"))
        for label in labels.values():
            if label not in net.done:
                net.r.mapped[label] = f"(not used: LyCORIS algo {algo} is not mapped)"
                net.done.add(label)
        return
    name = args.get("preset", "full").strip()
    conv_on = PRESETS.get(name, (True,))[0] and _whole(args.get("conv_dim", 1)) != 0
    kind = "lora" if ALGOS[algo] == "locon" and not conv_on else ALGOS[algo]
    _set_type(net, spec, kind, f"LyCORIS algo={algo}" + ("" if conv_on else ", no 3×3 convolutions"))
    if "algo" in labels:
        net.r.mapped[labels["algo"]] = f"network.network_module = {kind!r}"
        net.done.add(labels["algo"])
    factor = _whole(args.get("factor", -1)) if kind == "lokr" else -1
    _dims(net, src, factor if factor is not None and (factor == -1 or factor >= 1) else -1)
    _preset(net, spec, name, conv_on, family)
    for arg, value in sorted(args.items(), key=lambda kv: kv[0] != "conv_dim"):  # conv_dim before conv_alpha
        label, arg = labels[arg], LYCORIS_ALIASES.get(arg, arg)
        if label in net.done or arg == "dropout":
            continue
        off = not _lyco_bool(value) if arg in LYCO_BOOLS else _off(value)
        if arg in ("conv_dim", "conv_alpha", "factor", "dora_wd", "decompose_both", "wd_on_output"):
            _lycoris_arg(net, arg, label, value, conv_on, factor)
        elif off:
            net.off(label)
        elif arg in DROPOUT_ARGS:
            _lycoris_dropout(net, arg, label, value, _lyco_bool(args.get("bypass_mode", "False")))
        elif arg in INERT_ARGS:
            net.inert(label, INERT_ARGS[arg])
        elif arg in UNSUPPORTED_ARGS:
            net.unmapped(label, value, UNSUPPORTED_ARGS[arg])
        else:
            net.inert(label, "LyCORIS's create_network does not read it")


def _lycoris_arg(net: Net, arg: str, label: str, value: str, conv_on: bool, factor: int | None) -> None:
    """LyCORIS's conv_dim, conv_alpha, factor, dora_wd, decompose_both and wd_on_output."""
    kind, factor = net.kind, factor if factor is not None else -1
    if arg in ("conv_dim", "conv_alpha") and not conv_on:
        net.inert(label, "no 3×3 convolution is adapted (the preset or conv_dim = 0)")
    elif arg == "conv_dim":
        dim = _whole(value)
        if dim is None:
            net.unmapped(label, value, "LyCORIS reads conv_dim as a whole number")
        elif kind == "lokr" and dim > MAX_DIM and lokr_full_fits(factor):
            net.put(label, "conv_dim", MAX_DIM, f"LyCORIS's 'full dimension' {dim}: full halves at rank 1024 too")
            net.values["conv_alpha"] = float(MAX_DIM)  # LyCORIS scales full×full halves by 1
        else:
            net.put(label, "conv_dim", dim)
    elif arg == "conv_alpha":
        if net.values.get("conv_alpha") == float(MAX_DIM) and net.values.get("conv_dim") == MAX_DIM:
            net.inert(label, "LyCORIS scales full×full LoKr halves by 1 (conv_alpha = conv_dim)")
        else:
            _alpha(net, label, value, "conv_alpha", net.values.get("conv_dim") or net.values.get("network_dim", 16))
    elif arg == "factor":
        if kind != "lokr":
            net.inert(label, "only LoKr reads factor")
        else:
            net.put(label, "lokr_factor", _whole(value) if _whole(value) is not None else value)
    elif arg == "dora_wd":
        if not _lyco_bool(value):
            net.off(label)
        elif kind in ("lora", "locon"):
            net.put(label, "use_dora", True)
        else:
            net.unmapped(label, value, f"DoRA with {kind}: peft has no DoRA for LoHa/LoKr (lorakit's use_dora "
                         "works with lora/locon)")
    elif arg == "wd_on_output":
        if _lyco_bool(value):
            net.inert(label, "lorakit's DoRA normalises per output channel, as wd_on_output = True")
        else:
            net.unmapped(label, value, UNSUPPORTED_ARGS["wd_on_output"])
    else:
        _decompose_both(net, label, value, factor)


def _decompose_both(net: Net, label: str, value: str, factor: int) -> None:
    """LyCORIS hands decompose_both to LoKr unparsed: any non-empty text (even 'False') is on, and then w1 is
    low-rank where the rank is below half its larger side. lorakit keeps w1 full."""
    ranks = [r for r in (net.values.get("network_dim", 16), net.values.get("conv_dim")) if r]
    w1_side = max(kron_halves(w, factor)[0] for w in WIDTHS)
    if net.kind != "lokr":
        net.inert(label, "only LoKr reads decompose_both")
    elif value == "":
        net.off(label)
    elif all(2 * r >= w1_side for r in ranks):
        net.inert(label, f"every w1 half stays full at rank {min(ranks)} with factor {factor}")
    else:
        net.unmapped(label, value, f"LyCORIS passes decompose_both unparsed, so {value!r} is on: w1 halves wider "
                     f"than twice the rank become low-rank; lorakit keeps w1 full")


def _rate(net: Net, arg: str, label: str, value: Any, how: str) -> None:
    """rank_dropout / module_dropout as a number (sd-scripts and LyCORIS read them with float()); 0 or empty is
    off."""
    rate = None if isinstance(value, bool) else _float(value)
    if isinstance(value, str) and _off(value) or rate == 0:
        net.off(label)
    elif rate is None:
        net.unmapped(label, value, f"network.{arg} takes a number")
    else:
        net.put(label, arg, rate, how)


def _lycoris_dropout(net: Net, arg: str, label: str, value: str, bypass: bool) -> None:
    """LyCORIS's rank/module dropout where lorakit's network type does the same (lycoris/modules/*.py forward):
    module dropout everywhere (the module returns the original forward), LoKr's rank dropout (peft's is LyCORIS's,
    and LoKr's bypass path has none); LoCon's and LoHa's rank dropout differ from lorakit's (LYCORIS_RANK_DROPOUT)."""
    if arg == "module_dropout":
        _rate(net, arg, label, value, "LyCORIS's module dropout: the module skipped, as in lorakit")
    elif net.kind == "lokr" and bypass:
        net.inert(label, "LyCORIS's LoKr applies no rank dropout in bypass_mode")
    elif net.kind == "lokr":
        _rate(net, arg, label, value, "LyCORIS's LoKr rank dropout, which peft's LoKr does")
    else:
        net.unmapped(label, value, LYCORIS_RANK_DROPOUT["loha" if net.kind == "loha" else "lora"])


def _dropout(net: Net, src: dict[str, Any], spec: Spec | None) -> None:
    """Neuron dropout: network_dropout, which sd-scripts hands to LyCORIS as its 'dropout' argument unless
    network_args has one (train_network.py). sd-scripts' networks.lora drops the down projection's output, which
    is lorakit's dropout_placement 'kohya'; LyCORIS drops nothing outside bypass_mode."""
    label, value = "network_dropout", src.get("network_dropout")
    lycoris = spec is not None and spec.module == "lycoris.kohya"
    if lycoris and "dropout" in spec.args:
        if "network_dropout" in src:
            net.inert("network_dropout", "LyCORIS's network_args dropout wins over it")
        label, value = spec.labels["dropout"], spec.args["dropout"]
        if label in net.done:
            return
    elif "network_dropout" not in src or value in ("", None):
        return
    rate = None if isinstance(value, bool) else _float(value)
    if rate is None:
        net.unmapped(label, value, "network.network_dropout takes a number")
    elif rate == 0:
        net.off(label)
    elif lycoris and spec.args.get("algo", "lora").strip().lower() not in ALGOS:
        net.r.mapped[label] = f"(not used: LyCORIS algo {spec.args['algo']} is not mapped)"
        net.done.add(label)
    elif lycoris:
        bypass = _lyco_bool(spec.args.get("bypass_mode", "False"))
        if bypass:
            net.unmapped(label, value, LYCORIS_NEURON_DROPOUT[True])
        else:
            net.inert(label, LYCORIS_NEURON_DROPOUT[False])
    else:
        net.put(label, "network_dropout", rate, "on the down projection's output, as sd-scripts' networks.lora")
        if "network_dropout" in net.values:
            net.values["dropout_placement"] = "kohya"
