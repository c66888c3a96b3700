"""`config validate`'s findings on the network type (torch-free): combinations peft or the loaders cannot do."""

from __future__ import annotations

from typing import Any

LYCORIS_TYPES = ("loha", "lokr")  # peft's LoHa/LoKr: no input dropout, no DoRA, no diffusers folder


def network_findings(cfg: Any) -> list[Any]:
    """Problems of `cfg.network` with the rest of the config, each a `config.validate.Finding`:
    the diffusers folder for LoHa/LoKr/DoRA (not implemented yet), network_dropout with LoHa/LoKr (peft's LoHa
    and LoKr have no dropout on the input, so it would be silently ignored)."""
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
    if net.network_dropout > 0 and net.network_module in LYCORIS_TYPES:
        found.append(Finding("network.network_dropout", f"{net.network_module} has no input dropout in peft; set "
                             "it to 0"))
    return found
