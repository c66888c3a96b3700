"""The speed and memory options on the tiny SD1 UNet (issue 12): fp8_base, torch_compile, channels_last, allow_tf32
and cudnn_benchmark."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch._dynamo.utils import counters

from lorakit.config.loader import load_config
from lorakit.engine import speed
from lorakit.families import load_model
from lorakit.networks.attach import adapter_weights, attach_network, network_parameters
from lorakit.networks.registry import ADAPTER

CPU = torch.device("cpu")


def tiny(*sets: str, dtype: torch.dtype = torch.bfloat16):
    """The config (tiny-sd1, the default model) and its model loaded in `dtype`."""
    cfg = load_config(sets=list(sets))
    return cfg, load_model(cfg.model, dtype)


def round_through_fp8(unet: nn.Module) -> None:
    """What sd-scripts trains with --fp8_base (train_network.py: `unet.to(dtype=torch.float8_e4m3fn)`, autocast then
    upcasts each weight inside each op): the model whose Linear/Conv2d weights were rounded through float8."""
    with torch.no_grad():
        for m in unet.modules():
            if type(m) in (nn.Linear, nn.Conv2d):
                m.weight.copy_(m.weight.to(torch.float8_e4m3fn).to(m.weight.dtype))


def forward(parts, train, autocast: bool = True, grad_of: list[torch.Tensor] | None = None):
    """The UNet's output for fixed inputs, and the gradients of its mean square w.r.t. `grad_of` (default: the
    input latents)."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 4, 8, 8, generator=g)
    cond = torch.randn(2, 77, parts.unet.config.cross_attention_dim, generator=g)
    x_in = speed.unet_input(x, train).requires_grad_(grad_of is None)
    with torch.autocast("cpu", torch.bfloat16, enabled=autocast):
        out = parts.unet(x_in, torch.tensor([10, 500]), encoder_hidden_states=cond.to(x_in.dtype)).sample
    wrt = grad_of if grad_of is not None else [x_in]
    grads = torch.autograd.grad(out.float().square().mean(), wrt)
    return out.detach(), grads


def nonzero_network(parts, network) -> tuple[list[nn.Parameter], set[torch.dtype]]:
    """Attach the configured network (seed 0); its trainable weights, made fp32 as the trainer keeps them and
    nonzero (lora_B starts at 0) so that the adapter changes the output, and the dtypes peft gave them."""
    torch.manual_seed(0)
    attach_network(parts, network)
    params = network_parameters(parts.unet)
    attached = {p.dtype for p in params}
    with torch.no_grad():
        for p in params:
            p.data = p.data.float() + 0.01
    return params, attached


def test_fp8_base_is_the_model_with_weights_rounded_through_fp8() -> None:
    cfg, parts = tiny("train.mixed_precision='bf16'", "train.fp8_base=true")
    _, ref = tiny("train.mixed_precision='bf16'")
    te_before = {k: v.clone() for k, v in parts.text_encoders[0].state_dict().items()}
    expected_bytes = sum(p.numel() * (1 if name.endswith("weight") and type(m) in (nn.Linear, nn.Conv2d) else 2)
                         for m in parts.unet.modules() for name, p in m.named_parameters(recurse=False))
    notices = speed.apply_speed_settings(parts, cfg.train, CPU)
    round_through_fp8(ref.unet)

    layers = [m for m in parts.unet.modules() if isinstance(m, (nn.Linear, nn.Conv2d))]
    assert layers and all(m._parameters["weight"].dtype == torch.float8_e4m3fn for m in layers)
    assert sum(p.numel() * p.element_size() for p in parts.unet.parameters()) == expected_bytes
    assert all(p.dtype == torch.bfloat16 for m in parts.unet.modules() if isinstance(m, (nn.GroupNorm, nn.LayerNorm))
               for p in m.parameters())
    assert any(n.startswith(f"fp8_base: {len(layers)} Linear/Conv2d") for n in notices)
    te_after = parts.text_encoders[0].state_dict()  # the text encoders untouched
    assert all(torch.equal(te_before[k], v) and te_before[k].dtype == v.dtype for k, v in te_after.items())

    out, grads = forward(parts, cfg.train)
    ref_out, ref_grads = forward(ref, cfg.train)
    assert out.dtype == torch.bfloat16 and torch.equal(out, ref_out)
    assert torch.equal(grads[0], ref_grads[0])


@pytest.mark.parametrize("network", [["network.network_module='lora'"],
                                     ["network.network_module='locon'", "network.use_dora=true"],
                                     ["network.network_module='loha'"]])
def test_networks_on_fp8_base_train_as_on_rounded_weights(network: list[str]) -> None:
    cfg, parts = tiny("train.mixed_precision='bf16'", "train.fp8_base=true", *network)
    _, ref = tiny("train.mixed_precision='bf16'", *network)
    speed.apply_speed_settings(parts, cfg.train, CPU)
    round_through_fp8(ref.unet)
    (params, attached), (ref_params, _) = nonzero_network(parts, cfg.network), nonzero_network(ref, cfg.network)
    # peft gives a new adapter its base layer's weight dtype: the frozen model's (bf16), as without fp8, never float8
    assert attached == {torch.bfloat16}
    out, grads = forward(parts, cfg.train, grad_of=params)
    ref_out, ref_grads = forward(ref, cfg.train, grad_of=ref_params)
    assert torch.equal(out, ref_out)
    assert all(g.dtype == torch.float32 and torch.equal(g, r) for g, r in zip(grads, ref_grads, strict=True))


def test_fp8_refuses_a_model_with_a_network_and_keeps_weights_beyond_its_range() -> None:
    cfg, parts = tiny("train.mixed_precision='bf16'", "train.fp8_base=true")
    with torch.no_grad():
        parts.unet.conv_in.weight[0, 0, 0, 0] = 500.0  # float8 e4m3's largest is 448
    line = speed.store_fp8(parts.unet, torch.bfloat16)
    assert parts.unet.conv_in.weight.dtype == torch.bfloat16 and "1 kept in bfloat16" in line
    assert "conv_in" in line
    _, other = tiny("train.mixed_precision='bf16'")
    attach_network(other, cfg.network)
    with pytest.raises(RuntimeError, match="before a network is attached"):
        speed.store_fp8(other.unet, torch.bfloat16)


def test_torch_compile_compiles_each_block() -> None:
    cfg, parts = tiny("train.torch_compile=true", dtype=torch.float32)
    notices = speed.apply_speed_settings(parts, cfg.train, CPU, compile_backend="aot_eager")
    unet = parts.unet
    blocks = {f"down_blocks.{i}" for i in range(len(unet.down_blocks))} | {"mid_block"} | \
        {f"up_blocks.{i}" for i in range(len(unet.up_blocks))}
    compiled = {name for name, m in unet.named_modules() if getattr(m, "_compiled_call_impl", None) is not None}
    assert compiled == blocks
    assert any(n.startswith(f"torch_compile: {len(blocks)} UNet blocks") for n in notices)


def test_compiled_block_equals_eager_with_fp8_and_adapter_switches(monkeypatch) -> None:
    """fp8 weights (read upcast to fp32: model_precision 'fp32', no autocast, so the comparison is exact but for
    float reassociation) and a LoRA, through a compiled block; then the adapter at −1 and off, as Difference and the
    samples switch it: each recompiled and equal to eager."""
    monkeypatch.setattr(speed, "REGIONS", ("mid_block",))  # one block keeps the test fast; the others are alike
    cfg, parts = tiny("train.mixed_precision='bf16'", "train.model_precision='fp32'", "train.fp8_base=true",
                      "train.torch_compile=true", dtype=torch.float32)
    cfg_eager = cfg.model_copy(update={"train": cfg.train.model_copy(update={"torch_compile": False})})
    speed.apply_speed_settings(parts, cfg_eager.train, CPU)
    params, _ = nonzero_network(parts, cfg.network)
    settings = [{}, {ADAPTER: -1.0}, {ADAPTER: 0.0}]
    eager = []
    for weights in settings:
        with adapter_weights(parts, weights):
            eager.append(forward(parts, cfg.train, autocast=False, grad_of=params if not weights else None))

    speed.compile_regions(parts.unet, backend="aot_eager")
    counters.clear()
    for weights, (ref_out, ref_grads) in zip(settings, eager, strict=True):
        with adapter_weights(parts, weights):
            out, grads = forward(parts, cfg.train, autocast=False, grad_of=params if not weights else None)
        assert torch.equal(out, ref_out), weights
        assert all(torch.allclose(g, r, rtol=1e-5, atol=1e-7) for g, r in zip(grads, ref_grads, strict=True))
    assert not counters["graph_break"]  # the float8 weight property traces into the graph
    assert counters["stats"]["unique_graphs"] == len(settings)


def test_channels_last_unet_and_input() -> None:
    cfg, parts = tiny("train.mixed_precision='no'", "train.channels_last=true", dtype=torch.float32)
    ref_out, _ = forward(parts, cfg.train, autocast=False)
    notices = speed.apply_speed_settings(parts, cfg.train, CPU)
    convs = [m.weight for m in parts.unet.modules() if isinstance(m, nn.Conv2d)]
    assert convs and all(w.is_contiguous(memory_format=torch.channels_last) for w in convs)
    x = speed.unet_input(torch.randn(2, 4, 8, 8, dtype=torch.float64), cfg.train)
    assert x.dtype == torch.float32 and x.is_contiguous(memory_format=torch.channels_last)
    assert not x.is_contiguous()
    out, _ = forward(parts, cfg.train, autocast=False)
    # the same math in another memory layout: the convolutions sum in another order (fp32 rounding, more with more
    # threads), so equal within fp32 accumulation error, not bit for bit
    assert torch.allclose(out, ref_out, rtol=1e-4, atol=1e-5)
    assert notices == ["channels_last: the UNet's convolutions in channels-last memory format"]


@pytest.fixture
def cuda_flags():
    """The process-wide CUDA flags, put back after the test (they can be set on a CPU-only torch too)."""
    cudnn = torch.backends.cudnn
    saved = (torch.get_float32_matmul_precision(), cudnn.allow_tf32, cudnn.benchmark)
    yield cudnn
    torch.set_float32_matmul_precision(saved[0])
    cudnn.allow_tf32, cudnn.benchmark = saved[1], saved[2]


@pytest.mark.parametrize("tf32, benchmark", [(True, True), (False, False)])
def test_cuda_flags_follow_the_run(cuda_flags, tf32: bool, benchmark: bool) -> None:
    cudnn = cuda_flags
    cfg, _ = tiny(f"train.allow_tf32={str(tf32).lower()}", f"train.cudnn_benchmark={str(benchmark).lower()}")
    torch.set_float32_matmul_precision("medium")
    cudnn.allow_tf32, cudnn.benchmark = not tf32, not benchmark
    assert speed.cuda_flags(cfg.train, CPU) == []  # only CUDA has them
    assert (torch.get_float32_matmul_precision(), cudnn.allow_tf32) == ("medium", not tf32)
    notices = speed.cuda_flags(cfg.train, torch.device("cuda"))
    # torch's TF32 switches ("high" = TF32 matmuls); readable through the old and the new API alike (inductor reads
    # get_float32_matmul_precision, which raises once the new per-backend settings were written directly)
    assert (torch.get_float32_matmul_precision(), cudnn.allow_tf32, cudnn.benchmark) == \
        ("high" if tf32 else "highest", tf32, benchmark)
    assert torch.backends.cuda.matmul.fp32_precision == ("tf32" if tf32 else "ieee")
    assert len(notices) == 1 and ("TF32 matmuls and convolutions on" in notices[0]) == tf32
