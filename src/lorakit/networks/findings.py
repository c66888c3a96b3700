"""`config validate`'s findings on the network type (torch-free): combinations peft or the loaders cannot do."""

from __future__ import annotations

from typing import Any

LYCORIS_TYPES = ("loha", "lokr")  # peft's LoHa/LoKr: no neuron dropout, no DoRA, no diffusers folder


def network_findings(cfg: Any) -> list[Any]:
    """Problems of `cfg.network` with the rest of the config, each a `config.validate.Finding`:
    the diffusers folder for LoHa/LoKr/DoRA (not implemented yet), and the dropouts a network type cannot apply
    (`dropout_problems`)."""
    from ..config.validate import Finding

    net, found = cfg.network, []
    kind = "DoRA" if net.use_dora else net.network_module
    if cfg.output.save_format != "kohya" and (net.use_dora or net.network_module in LYCORIS_TYPES):
        found.append(Finding("output.save_format", f"the diffusers folder for {kind} is not implemented yet; use "
                             "save_format = 'kohya' (ComfyUI, A1111 and lorakit generate load it)"))
    if net.use_dora:  # a warning: ComfyUI and kohya/LyCORIS tools apply the file; A1111 applies it wrongly
        found.append(Finding("network.use_dora", "A1111/Forge apply DoRA files with a per-input normalisation and "
                             "get this (per-output, LyCORIS wd_on_output) file wrong; ComfyUI normalises by the base "
                             "weight (close for small changes); lorakit generate and LyCORIS apply it exactly",
                             False))
    if net.lokr_factor != -1 and net.network_module != "lokr":
        found.append(Finding("network.lokr_factor", f"is only used by network_module 'lokr', not "
                             f"'{net.network_module}'; remove it"))
    found += [Finding(key, message) for key, message in dropout_problems(net)]
    return found


def dropout_problems(net: Any) -> list[tuple[str, str]]:
    """(key, what to do) for each dropout of the `network` section its type cannot apply as kohya or LyCORIS do
    (`networks.dropout` raises the same at attach time):
    - network_dropout with LoHa/LoKr: LyCORIS applies none outside bypass mode (it warns that LoHa/LoKr have no
      neuron dropout) and peft's layers have none;
    - rank_dropout with LoHa: peft's LoHa always rescales the kept rows of ΔW by 1/(kept fraction), LyCORIS (as
      sd-scripts creates it, rank_dropout_scale never passed) does not; peft's LoKr can leave them unscaled;
    - DoRA with kohya-placed network_dropout or with rank_dropout: kohya has no DoRA, LyCORIS ignores neuron dropout
      with DoRA and drops rows of ΔW before its norm, and peft's DoRA rebuilds W + ΔW for the norm by calling
      lora_A, where a hook would drop entries of the weight itself."""
    kind, found = net.network_module, []
    if net.network_dropout > 0 and kind in LYCORIS_TYPES:
        found.append(("network.network_dropout", f"{kind} has no neuron dropout (LyCORIS applies none outside "
                      "bypass mode, peft has none); set it to 0 (module_dropout works with it)"))
    if net.rank_dropout > 0 and kind == "loha":
        found.append(("network.rank_dropout", "peft's LoHa rescales the kept rows of ΔW by 1/(kept fraction), "
                      "LyCORIS's does not; set it to 0 (module_dropout works with loha; lokr has LyCORIS's rank "
                      "dropout)"))
    if net.use_dora and kind not in LYCORIS_TYPES:
        if net.network_dropout > 0 and net.dropout_placement == "kohya":
            found.append(("network.network_dropout", "DoRA has no dropout on the down projection's output (kohya "
                          "has no DoRA, LyCORIS ignores it, peft's DoRA computes its weight norm through lora_A); "
                          "set it to 0, or dropout_placement = 'peft' for peft's dropout on the input"))
        if net.rank_dropout > 0:
            found.append(("network.rank_dropout", "DoRA normalises W + ΔW per output channel, and a per-sample rank "
                          "mask cannot enter that norm; set it to 0 (module_dropout works with DoRA)"))
    return found
