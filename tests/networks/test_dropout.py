"""kohya's dropouts on peft's LoRA layers, checked against sd-scripts and LyCORIS, not against lorakit.

The reference formulas are written from sd-scripts `networks/lora.py` `LoRAModule.forward` (module dropout, neuron
dropout on lora_down's output, per-sample rank dropout with the scale × 1/(1 − p)) and LyCORIS
`lycoris/modules/lokr.py` / `loha.py` (`forward`, `get_weight`: module dropout, rows of ΔW kept where
`torch.rand(out) > p`, unscaled). Each formula draws its random numbers in its tool's order, so under the same seed
it draws the same masks as the layer it is compared with.
"""

from __future__ import annotations

import json

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from peft import inject_adapter_in_model
from safetensors.torch import load_file

from lorakit import api
from lorakit.config.loader import load_config
from lorakit.config.schema import LorakitConfig, NetworkSection
from lorakit.errors import LorakitError
from lorakit.networks.dropout import dropout_settings, install_dropout, remove_dropout
from lorakit.networks.findings import network_findings
from lorakit.networks.registry import ADAPTER, network_type

COPY = "copy_machine"
RANK, ALPHA = 4, 2.0
SEEDS = range(24)


class Tiny(torch.nn.Module):
    """One Linear and one 3×3 convolution, the two layer kinds kohya's LoRAModule adapts."""

    def __init__(self) -> None:
        super().__init__()
        self.proj = torch.nn.Linear(8, 6)
        self.conv = torch.nn.Conv2d(3, 5, 3, padding=1)


def adapted(adapter: str = ADAPTER, model: torch.nn.Module | None = None, install: bool = True,
            **net: object) -> torch.nn.Module:
    """`Tiny` (or `model`) with a network of `net`'s settings as `adapter`, every factor non-zero (a trained one)."""
    cfg = NetworkSection(network_dim=RANK, network_alpha=ALPHA, **net)
    torch.manual_seed(0)
    model = model or Tiny()
    targets = {"proj": (RANK, ALPHA), "conv": (RANK, ALPHA)}
    inject_adapter_in_model(network_type(cfg.network_module).peft_config(cfg, targets), model, adapter_name=adapter)
    for name, p in model.named_parameters():
        if f".{adapter}." in name or name.endswith(f".{adapter}"):
            torch.nn.init.normal_(p, std=0.3)
    if install:
        install_dropout(model, dropout_settings(cfg), adapter)
    for layer in (model.proj, model.conv):
        layer.set_adapter(sorted(layer._all_available_adapter_names()))  # every adapter applied
    return model.train()


INPUTS = {  # layer → inputs: Linear on (B, in) and on (B, tokens, in) (the text encoder's), conv on (B, C, H, W)
    "proj": [torch.randn(5, 8, generator=torch.Generator().manual_seed(1)),
             torch.randn(3, 7, 8, generator=torch.Generator().manual_seed(2))],
    "conv": [torch.randn(4, 3, 6, 6, generator=torch.Generator().manual_seed(3))],
}


def kohya_forward(layer, x: torch.Tensor, dropout: float | None, rank_dropout: float | None,
                  module_dropout: float | None) -> torch.Tensor:
    """sd-scripts networks/lora.py LoRAModule.forward in training, with kohya's lora_down / lora_up weights taken
    from the peft layer (lora_A / lora_B) and scale = alpha / dim."""
    down, up = layer.lora_A[ADAPTER], layer.lora_B[ADAPTER]
    conv = isinstance(down, torch.nn.Conv2d)
    org_forwarded = layer.base_layer(x)
    if module_dropout is not None and torch.rand(1) < module_dropout:
        return org_forwarded
    lx = F.conv2d(x, down.weight, None, down.stride, down.padding) if conv else F.linear(x, down.weight)
    if dropout is not None:
        lx = F.dropout(lx, p=dropout)
    scale = ALPHA / RANK
    if rank_dropout is not None:
        mask = torch.rand((lx.size(0), RANK), device=lx.device) > rank_dropout
        if len(lx.size()) == 3:
            mask = mask.unsqueeze(1)
        elif len(lx.size()) == 4:
            mask = mask.unsqueeze(-1).unsqueeze(-1)
        lx = lx * mask
        scale = scale * (1.0 / (1.0 - rank_dropout))
    lx = F.conv2d(lx, up.weight) if conv else F.linear(lx, up.weight)
    return org_forwarded + lx * 1.0 * scale


@pytest.mark.parametrize("dropouts", [(0.3, 0.25, 0.4), (0.5, None, None), (None, 0.5, None), (None, None, 0.5)],
                         ids=["all", "neuron", "rank", "module"])
def test_training_output_is_kohyas(dropouts: tuple[float | None, ...]) -> None:
    neuron, rank, module = dropouts
    model = adapted(network_dropout=neuron or 0.0, rank_dropout=rank or 0.0, module_dropout=module or 0.0)
    skipped = used = 0
    for name, inputs in INPUTS.items():
        layer = getattr(model, name)
        for x in inputs:
            for seed in SEEDS:
                torch.manual_seed(seed)
                got = layer(x)
                torch.manual_seed(seed)
                want = kohya_forward(layer, x, neuron, rank, module)
                torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
                base = torch.equal(want, layer.base_layer(x))
                skipped, used = skipped + base, used + (not base)
    assert used and (skipped if module else not skipped)  # module dropout hit some calls, and only with it


def _subset_sums(contributions: torch.Tensor) -> torch.Tensor:
    """Every sum of a subset of the rank contributions (…, r) → (…, 2^r), subset i holding rank k when bit k is set."""
    r = contributions.size(-1)
    subsets = torch.tensor([[(i >> k) & 1 for k in range(r)] for i in range(2 ** r)], dtype=contributions.dtype)
    return contributions @ subsets.T


def test_rank_dropout_drops_whole_ranks_per_sample_and_scales_the_kept() -> None:
    """Each sample's update is its kept ranks' contributions × 1/(1 − p), the same ranks for all its tokens."""
    p = 0.5
    model = adapted(rank_dropout=p)
    layer, x = model.proj, INPUTS["proj"][1]  # (B, tokens, in)
    lx = F.linear(x, layer.lora_A[ADAPTER].weight)  # (B, T, r)
    per_rank = lx.unsqueeze(-2) * layer.lora_B[ADAPTER].weight * (ALPHA / RANK)  # (B, T, out, r)
    sums = _subset_sums(per_rank) / (1 - p)  # (B, T, out, 2^r)
    kept_counts = set()
    for seed in SEEDS:
        torch.manual_seed(seed)
        delta = layer(x) - layer.base_layer(x)  # (B, T, out)
        for b in range(x.size(0)):
            fits = [i for i in range(2 ** RANK) if torch.allclose(sums[b, ..., i], delta[b], atol=1e-5)]
            assert len(fits) == 1, f"sample {b}: no single set of kept ranks explains every token"
            kept_counts.add(bin(fits[0]).count("1"))
    assert min(kept_counts) < RANK and max(kept_counts) > 0  # ranks were dropped and kept


@pytest.mark.parametrize("use_dora", [False, True], ids=["lora", "dora"])
def test_module_dropout_gives_the_base_or_the_full_output(use_dora: bool) -> None:
    model = adapted(module_dropout=0.5, use_dora=use_dora)
    for name, inputs in INPUTS.items():
        layer, x = getattr(model, name), inputs[0]
        base = layer.base_layer(x)
        layer.eval()
        full = layer(x)
        layer.train()
        assert not torch.allclose(full, base)
        seen = set()
        for seed in SEEDS:
            torch.manual_seed(seed)
            out = layer(x)
            seen.add("base" if torch.equal(out, base) else "full" if torch.equal(out, full) else "other")
        assert seen == {"base", "full"}, name
        assert layer.active_adapters == [ADAPTER]  # put back after each skipped call


def test_eval_is_unchanged_and_state_dict_keys_stay_pefts() -> None:
    plain = adapted(install=False)
    keys = {k: v.clone() for k, v in plain.state_dict().items()}
    dropped = adapted(network_dropout=0.5, rank_dropout=0.5, module_dropout=0.5)
    assert dropped.state_dict().keys() == keys.keys()
    assert all(torch.equal(v, keys[k]) for k, v in dropped.state_dict().items())
    plain.eval()
    dropped.eval()
    for name, inputs in INPUTS.items():
        for x in inputs:
            assert torch.equal(getattr(dropped, name)(x), getattr(plain, name)(x))
    dropped.train()
    x = INPUTS["proj"][0]
    assert not torch.equal(dropped.proj(x), dropped.proj(x))  # and in training it drops


def test_gradient_checkpointing_recomputes_the_same_masks() -> None:
    """torch.utils.checkpoint restores the RNG state for the recomputation, so the gradients are the plain ones."""
    x, trained = INPUTS["conv"][0], 0
    for seed in range(4):
        grads = []
        for checkpointed in (False, True):
            model = adapted(network_dropout=0.3, rank_dropout=0.3, module_dropout=0.2)
            torch.manual_seed(seed)
            x = x.detach().requires_grad_(True)  # a graph even when module dropout skips the adapter
            out = (torch.utils.checkpoint.checkpoint(model.conv, x, use_reentrant=False) if checkpointed
                   else model.conv(x))
            out.square().sum().backward()
            grads.append([x.grad] + [p.grad for n, p in model.conv.named_parameters() if ADAPTER in n])
        assert all(a is None and b is None or torch.equal(a, b) for a, b in zip(*grads))
        trained += grads[0][1] is not None
    assert trained  # not every call skipped by module dropout


@pytest.mark.parametrize("module", ["lora", "lokr", "loha"])
def test_a_frozen_adapter_drops_nothing(module: str) -> None:
    """Difference's copy machine: after remove_dropout its output is the same at every training step, while the
    adapter trained beside it keeps its own dropout."""
    rates = {"rank_dropout": 0.5, "module_dropout": 0.5} if module != "loha" else {"module_dropout": 0.5}
    model = adapted(COPY, network_module=module, **rates, **({"network_dropout": 0.5} if module == "lora" else {}))
    x = INPUTS["proj"][0]
    assert not torch.equal(model.proj(x), model.proj(x))
    remove_dropout(model, COPY)
    assert torch.equal(model.proj(x), model.proj(x))
    both = adapted(ADAPTER, model, network_module=module, module_dropout=0.5)  # the trained network beside it
    with torch.no_grad():
        both.proj.set_adapter([COPY])
        frozen_only = both.proj(x)
        both.proj.set_adapter([COPY, ADAPTER])
        both.eval()
        full = both.proj(x)
        both.train()
        seen = {("copy" if torch.equal(y, frozen_only) else "both" if torch.equal(y, full) else "other")
                for y in (both.proj(x) for _ in SEEDS)}
    assert seen == {"copy", "both"}  # module dropout skips lorakit's adapter only, never the frozen one


def lycoris_forward(layer, x: torch.Tensor, rank_dropout: float, module_dropout: float) -> torch.Tensor:
    """LyCORIS LokrModule / LohaModule.forward in training, rebuild mode (bypass_mode off), multiplier 1, rank_dropout
    unscaled (lycoris/kohya.py never passes rank_dropout_scale): ΔW from peft's get_delta_weight, the same
    factors."""
    org = layer.base_layer(x)
    if module_dropout and torch.rand(1) < module_dropout:
        return org
    weight = layer.get_delta_weight(ADAPTER)
    if rank_dropout:
        drop = (torch.rand(weight.size(0)) > rank_dropout).to(weight.dtype)
        weight = weight * drop.view(-1, *[1] * len(weight.shape[1:]))
    return org + F.linear(x, weight)


@pytest.mark.parametrize("module, rank", [("lokr", 0.5), ("loha", 0.0)])
def test_lycoris_types_drop_as_lycoris(module: str, rank: float) -> None:
    model = adapted(network_module=module, rank_dropout=rank, module_dropout=0.3)
    layer, x = model.proj, INPUTS["proj"][0]
    for seed in SEEDS:
        torch.manual_seed(seed)
        got = layer(x)
        torch.manual_seed(seed)
        torch.testing.assert_close(got, lycoris_forward(layer, x, rank, 0.3), rtol=1e-5, atol=1e-6)


REFUSED = [
    ({"network_module": "loha", "rank_dropout": 0.1}, "network.rank_dropout"),
    ({"network_module": "lokr", "network_dropout": 0.1}, "network.network_dropout"),
    ({"network_module": "loha", "network_dropout": 0.1, "dropout_placement": "peft"}, "network.network_dropout"),
    ({"use_dora": True, "network_dropout": 0.1}, "network.network_dropout"),
    ({"use_dora": True, "rank_dropout": 0.1}, "network.rank_dropout"),
]


@pytest.mark.parametrize("net, key", REFUSED, ids=[str(n) for n, _ in REFUSED])
def test_what_a_type_cannot_apply_is_refused(net: dict, key: str) -> None:
    cfg = LorakitConfig.model_validate({"network": net})
    assert [f.key for f in network_findings(cfg) if f.error and "dropout" in f.key] == [key]
    with pytest.raises(LorakitError, match=key):
        dropout_settings(cfg.network)


def test_dora_takes_peft_placement_and_module_dropout() -> None:
    cfg = LorakitConfig.model_validate({"network": {"use_dora": True, "network_dropout": 0.1,
                                                    "dropout_placement": "peft", "module_dropout": 0.2}})
    assert [f for f in network_findings(cfg) if f.error] == []
    model = adapted(use_dora=True, network_dropout=0.1, dropout_placement="peft")
    assert isinstance(model.proj.lora_dropout[ADAPTER], torch.nn.Dropout)  # peft's, on the input
    assert isinstance(adapted(network_dropout=0.1).proj.lora_dropout[ADAPTER], torch.nn.Identity)  # kohya: hooks


def test_a_run_trains_with_all_three(tmp_path: Path, image_dir: Path) -> None:
    def run(*sets: str):
        return api.train(load_config(sets=[
            f'data.train_data_dir="{image_dir}"', f'output.output_dir="{tmp_path / "runs"}"', "data.resolution=64",
            "train.learning_rate=2e-3", "train.max_train_steps=3", "network.network_dim=4",
            "network.network_module='locon'", "network.conv_dim=2", *sets]))

    plain = load_file(run().lora_path)
    dropped_path = run("network.network_dropout=0.3", "network.rank_dropout=0.3", "network.module_dropout=0.3").lora_path
    dropped = load_file(dropped_path)
    from safetensors import safe_open

    with safe_open(str(dropped_path), "pt") as f:
        meta = f.metadata()
    # sd-scripts records the network args it was given (train_network.py: ss_network_args, the values as strings)
    assert json.loads(meta["ss_network_args"])["rank_dropout"] == "0.3"
    assert json.loads(meta["ss_network_args"])["module_dropout"] == "0.3"
    assert meta["ss_network_dropout"] == "0.3"
    assert dropped.keys() == plain.keys()
    ups = [k for k in plain if k.endswith("lora_up.weight")]
    trained = [k for k in ups if dropped[k].abs().sum() > 0]  # module dropout may skip a module at all 3 steps
    assert len(trained) > len(ups) / 2 and all(plain[k].abs().sum() > 0 for k in ups)
    assert any(not torch.equal(dropped[k], plain[k]) for k in ups)  # and the dropouts changed what it learned
