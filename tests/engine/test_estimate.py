"""`lorakit estimate`: FLOPs against 2·m·n·k and a published SD1.5 count, memory parts against parameter counts,
the meta-device activation probe against autograd's rules, auto_memory's order, and the command's table."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from lorakit.config.schema import LorakitConfig
from lorakit.engine import estimate as est
from lorakit.engine.flops import (TrainingFlops, count_training_flops, lora_flops_per_image, measure_flops,
                                  meta_unet, probe_memory, training_flops_per_image)


def tiny_config(**train: object) -> LorakitConfig:
    """tiny-sd1 at 64 px, bf16 compute (the estimate never runs anything, so no GPU is needed)."""
    values = {"mixed_precision": "bf16", "train_batch_size": 2, **train}
    return LorakitConfig.model_validate({"model": {"pretrained_model_name_or_path": "tiny-sd1"},
                                         "data": {"resolution": 64}, "network": {"network_dim": 4},
                                         "train": values})


def part(result: est.Estimate, prefix: str) -> int | None:
    """Bytes of the component whose name starts with `prefix` (None: not on the GPU)."""
    return next((size for name, size in result.parts if name.startswith(prefix)), None)


# -- FLOPs ----------------------------------------------------------------------------------------------------------

def test_conv_and_linear_flops_are_2mnk_forward_and_input_gradient_backward() -> None:
    """Forward: 2·m·n·k per matmul (a k×k convolution: 2·outputs·Cin·k²); backward with frozen weights: only dX,
    which costs the same again (no dW)."""
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.Flatten(), torch.nn.Linear(8 * 6 * 6, 10))
    batch = 2
    conv = 2 * (batch * 6 * 6 * 8) * (3 * 3 * 3)
    linear = 2 * batch * (8 * 6 * 6) * 10
    counted = measure_flops(net, {"input": torch.randn(batch, 3, 6, 6)}, grad_inputs=("input",))
    assert counted.forward == conv + linear
    assert counted.backward == conv + linear
    assert counted.attention == 0
    assert counted.total == 2 * (conv + linear)


class Scores(torch.nn.Module):
    """q·kᵀ of one tensor with itself: both operands are activations, as in attention."""

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return torch.bmm(input, input.transpose(1, 2))


def test_activation_matmuls_need_both_gradients() -> None:
    b, m, k = 2, 5, 7
    counted = measure_flops(Scores(), {"input": torch.randn(b, m, k)}, grad_inputs=("input",))
    assert counted.forward == counted.attention == 2 * b * m * m * k
    assert counted.backward == 2 * counted.forward  # d(left) and d(right)


def test_sd15_unet_flops_match_the_published_count() -> None:
    """SD1.5's UNet at 512 px: BK-SDM (Kim et al. 2023, arXiv:2305.15798, Table 1) reports 339 G MACs for the
    SD-v1.4/1.5 U-Net (same architecture), counted with thop (src/count_macs_params.py in Nota-NetsPresso/BK-SDM),
    which sees Conv2d/Linear modules and not attention's q·kᵀ and softmax·v. Those are added analytically:
    4·L·C·(L + 77) per transformer block (self: L×L, cross: L×77 text tokens), blocks at 64² (C 320), 32² (640)
    and 16² (1280): 2 down + 3 up each, and one in the middle at 8² (1280)."""
    counted = count_training_flops(meta_unet("sd15"), 512, 512)
    weight_macs = (counted.forward - counted.attention) / 2
    assert weight_macs == pytest.approx(339e9, rel=0.01)
    levels = [(64 * 64, 320, 5), (32 * 32, 640, 5), (16 * 16, 1280, 5), (8 * 8, 1280, 1)]
    assert counted.attention == sum(4 * tokens * c * (tokens + 77) * n for tokens, c, n in levels)
    # input gradients only: every weight op at most once more, attention at most twice; no weight gradients
    assert counted.forward - counted.attention <= counted.backward <= counted.forward + counted.attention
    assert training_flops_per_image(meta_unet("sd15"), 512, 512) == counted.forward + counted.backward


def test_lora_flops_are_three_times_the_forward_of_down_and_up() -> None:
    """Per adapted layer: forward 2·rows·r·(in + out) (down then up), backward twice that (dX and dW)."""
    unet = torch.nn.ModuleDict({"a": torch.nn.Linear(10, 20), "c": torch.nn.Conv2d(4, 6, 3)})
    flops = TrainingFlops(0, 0, 0, (("a", 7), ("c", 5)))
    assert lora_flops_per_image(flops, unet, {"a": 2, "c": 3}) == 3 * 2 * (7 * 2 * (10 + 20) + 5 * 3 * (4 * 9 + 6))


# -- the activation probe -------------------------------------------------------------------------------------------

def test_probe_counts_what_autograd_keeps() -> None:
    """Frozen Linear → GELU → frozen Linear on N rows, loss mean(out²) in fp32. torch's derivatives.yaml: a Linear
    whose weight needs no gradient keeps only its weight (counted as a weight, not here); GELU keeps its input;
    pow keeps its input. Alive after the forward: the input x, GELU's input, pow's input and the loss. Under bf16
    autocast (CUDA's rules) the Linears run in bf16 and each keeps a bf16 copy of its fp32 weight: 2·64·64·2 bytes
    that do not grow with the batch; GELU's input is then bf16."""
    with torch.device("meta"):
        net = torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.GELU(), torch.nn.Linear(64, 64))
    net.requires_grad_(False)
    rows = 10

    def step() -> torch.Tensor:
        x = torch.empty(rows, 64, device="meta", requires_grad=True)
        return net(x).float().pow(2).mean()

    fp32 = probe_memory(step, [net], None)
    assert fp32.after_forward == (rows * 64 * 4 * 3 + 4, 0)
    bf16 = probe_memory(step, [net], torch.bfloat16)
    assert bf16.after_forward == (rows * 64 * (4 + 2 + 4) + 4, 2 * 64 * 64 * 2)
    assert bf16.saved(3) == 3 * bf16.after_forward[0] + bf16.after_forward[1]  # weight copies do not scale


# -- memory parts ---------------------------------------------------------------------------------------------------

def lora_values(cfg: LorakitConfig) -> int:
    """Σ rank·(in·k² + out) over the adapted UNet layers: sd-scripts networks/lora.py LoRAModule.__init__ builds
    lora_down (in → rank, the layer's kernel) and lora_up (rank → out, 1×1), without biases."""
    from lorakit.families import get_family
    from lorakit.networks.targets import model_skeleton, select_targets

    targets = select_targets(model_skeleton(cfg.model), cfg.network).unet
    layers = dict(get_family("sd1").build_tiny().unet.named_modules())
    total = 0
    for path, (rank, _alpha) in targets.items():
        layer = layers[path]
        if isinstance(layer, torch.nn.Linear):
            total += rank * (layer.in_features + layer.out_features)
        else:
            total += rank * (layer.in_channels * layer.kernel_size[0] * layer.kernel_size[1] + layer.out_channels)
    return total


def test_network_gradients_and_optimizer_state_follow_the_parameter_count() -> None:
    cfg = tiny_config()
    values = lora_values(cfg)
    result = est.estimate(cfg)
    assert part(result, "network weights (fp32)") == 4 * values
    assert part(result, "network gradients") == 4 * values
    assert part(result, "optimizer state (AdamW)") == 2 * 4 * values  # exp_avg, exp_avg_sq in fp32
    half = est.estimate(tiny_config(lora_precision="bf16"))
    assert part(half, "network weights (bf16)") == 2 * values
    assert part(half, "optimizer state (AdamW)") == 2 * 2 * values  # torch keeps the states in the param dtype


def test_optimizer_state_per_optimizer() -> None:
    big, small = (64, 128), (4, 16)  # 8192 values (8-bit in bitsandbytes), 64 values (below min_8bit_size: fp32)
    assert est.optimizer_state_bytes("AdamW8bit", [big, small], 4) == 2 * 8192 * 1 + 2 * 64 * 4
    assert est.optimizer_state_bytes("Prodigy", [big], 4) == 4 * 8192 * 4  # s, p0, exp_avg, exp_avg_sq
    assert est.optimizer_state_bytes("Lion", [big], 2) == 8192 * 2
    # transformers' Adafactor (no beta1): factored row and column second moments, fp32
    assert est.optimizer_state_bytes("Adafactor", [big, (10,)], 4) == 4 * (64 + 128) + 4 * 10


def test_weights_in_the_model_precision_and_fp8() -> None:
    from lorakit.families import get_family

    unet = get_family("sd1").build_tiny().unet
    values = sum(p.numel() for p in unet.parameters()) + sum(b.numel() for b in unet.buffers())
    assert part(est.estimate(tiny_config()), "UNet weights") == 2 * values  # bf16
    assert part(est.estimate(tiny_config(mixed_precision="no")), "UNet weights") == 4 * values
    fp8_values = sum(m.weight.numel() for m in unet.modules() if isinstance(m, (torch.nn.Linear, torch.nn.Conv2d)))
    assert part(est.estimate(tiny_config(fp8_base=True)), "UNet weights (fp8)") == 2 * values - fp8_values


def test_encoders_leave_the_gpu_once_everything_is_cached() -> None:
    cached = est.estimate(tiny_config())
    assert part(cached, "VAE weights") is None and part(cached, "text encoder weights") is None
    assert cached.caching_peak > 0  # while caching, the VAE and text encoders are on the GPU (the UNet not yet)
    uncached = est.estimate(tiny_config(cache_latents=False, cache_text_encoder_outputs=False))
    assert part(uncached, "VAE weights") > 0 and part(uncached, "text encoder weights") > 0
    assert uncached.caching_peak == 0


def test_checkpointing_lowers_activations_and_adds_a_forward() -> None:
    plain, checkpointed = est.estimate(tiny_config()), est.estimate(tiny_config(gradient_checkpointing=True))
    assert part(checkpointed, "activations") < part(plain, "activations")
    m = est.measure(tiny_config(), est.setup_of(tiny_config()))
    assert checkpointed.step_flops - plain.step_flops == pytest.approx(2 * m.flops.forward)  # batch 2, recomputed


def test_time_is_flops_over_the_datasheet_peak_times_mfu() -> None:
    h100 = est.find_gpu("H100")
    result = est.estimate(tiny_config(), h100)
    assert result.seconds_per_step == pytest.approx(result.step_flops / (989e12 * est.DEFAULT_MFU))
    assert result.images_per_second == pytest.approx(2 / result.seconds_per_step)
    assert est.estimate(tiny_config()).seconds_per_step is None  # no GPU named or here


GPU_NAMES = [("h100", "NVIDIA H100 SXM"), ("NVIDIA H100 80GB HBM3", "NVIDIA H100 SXM"),
             ("H100 PCIe", "NVIDIA H100 PCIe"), ("NVIDIA A100-SXM4-40GB", "NVIDIA A100 40GB"),
             ("rtx4090", "NVIDIA RTX 4090"), ("NVIDIA GeForce RTX 3060", "NVIDIA RTX 3060"), ("Tesla T4", "NVIDIA T4"),
             ("Apple M2 Max", "Apple M2 Max")]


@pytest.mark.parametrize("name, expected", GPU_NAMES)
def test_gpu_names(name: str, expected: str) -> None:
    assert est.find_gpu(name).name == expected


def test_unknown_gpu_is_refused() -> None:
    from lorakit.errors import LorakitError

    with pytest.raises(LorakitError, match="not in the table"):
        est.find_gpu("NVIDIA L40S")  # not the L4


def test_detected_vram(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    assert est.detected_vram() is None
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda i: SimpleNamespace(total_memory=8 * est.GIB))
    assert est.detected_vram() == 8 * est.GIB


# -- auto_memory ----------------------------------------------------------------------------------------------------

def test_fit_to_memory_order_and_images_per_step() -> None:
    """Nothing fits in 1 byte: every change is made, in order, and batch × accumulation stays 8."""
    cfg = tiny_config(train_batch_size=8, cache_latents=False, cache_text_encoder_outputs=False)
    fitted, lines = est.fit_to_memory(cfg, 1)
    keys = [line.split(":")[0] for line in lines[:-1]]
    batch_key = "train.train_batch_size × gradient_accumulation_steps"
    assert keys == ["train.gradient_checkpointing", "train.cache_latents", "train.cache_text_encoder_outputs",
                    batch_key, batch_key, batch_key, "train.fp8_base"]
    assert "8 × 1 → 4 × 2" in lines[3] and "4 × 2 → 2 × 4" in lines[4] and "2 × 4 → 1 × 8" in lines[5]
    assert lines[-1].startswith("the estimate is still")
    t = fitted.train
    assert (t.gradient_checkpointing, t.cache_latents, t.cache_text_encoder_outputs, t.fp8_base) == (True,) * 4
    assert t.train_batch_size * t.gradient_accumulation_steps == 8


def test_fit_to_memory_odd_batch_and_no_fp8_in_fp32() -> None:
    cfg = tiny_config(train_batch_size=3, gradient_accumulation_steps=2, gradient_checkpointing=True,
                      mixed_precision="no")
    fitted, lines = est.fit_to_memory(cfg, 1)
    assert any("3 × 2 → 1 × 6" in line for line in lines)
    assert not any(line.startswith("train.fp8_base") for line in lines)  # fp8 needs bf16/fp16 compute
    assert (fitted.train.train_batch_size, fitted.train.gradient_accumulation_steps) == (1, 6)


def test_fit_to_memory_changes_nothing_that_fits() -> None:
    cfg = tiny_config()
    fitted, lines = est.fit_to_memory(cfg, 1000 * est.GIB)
    assert lines == [] and fitted == cfg


# -- the command ----------------------------------------------------------------------------------------------------

def test_estimate_command_prints_the_table(tmp_path: Path, cli) -> None:
    config = tmp_path / "run.toml"
    config.write_text('[model]\npretrained_model_name_or_path = "tiny-sd1"\n[data]\nresolution = 64\n'
                      '[train]\nmixed_precision = "bf16"\n', encoding="utf-8")
    code, out = cli("estimate", config, "--gpu", "3060", "--vram", "0.5")
    assert code == 0, out
    for text in ("component", "UNet weights", "activations (batch 1)", "training step peak", "s/step", "images/s",
                 "train.auto_memory (off) would change:", "train.gradient_checkpointing: false → true",
                 "Not calibrated against real runs"):
        assert text in out, text
    code, out = cli("estimate", config, "--gpu", "nonsense-gpu")
    assert code == 2 and "not in the table of GPUs" in out
