"""Peak GPU memory and time per step of a run, from its config alone (no weights read, nothing computed for real).

The model (docs/estimate.md has the long form):

- Weights: every model part built on the meta device from its architecture config (the shipped one for built-in
  names and single files, the folder's own otherwise), in the run's precisions: the frozen model in
  train.model_precision (fp8_base: the UNet's Linear/Conv weights at one byte), a VAE with `force_upcast` in fp32.
  The VAE leaves the GPU once every latent is cached, the text encoders once every caption is (engine/encode.py's
  offload); a trained text encoder stays.
- The network: attached by the run's own code (`networks.attach.attach_network`) to the meta models, so its
  parameter count is the real one for every network type; weights and gradients in train.lora_precision, the
  optimizer's state from the number and size of the states each optimizer keeps (`OPTIMIZER_STATES`).
- Activations: measured (`flops.probe_memory`): one training step at batch 1 runs on the meta device — text
  encoders when trained, the UNet with the network, the loss and the backward, with gradient checkpointing as the
  run enables it — while every storage alive is counted; batch-sized tensors scale with the batch, cast copies of
  weights do not. The VAE's encode (each step when latents are not cached, else once while caching, before the UNet
  comes to the GPU) is probed the same way, without gradients.
- Overhead: the CUDA context and library workspaces (`CUDA_CONTEXT_BYTES`) plus the caching allocator's slack
  (`ALLOCATOR_SLACK` of what is allocated).
- Time: model FLOPs (`flops.count_training_flops`: UNet forward + input-gradient backward, counted at 2·m·n·k) plus
  what the hardware also does (the network's own FLOPs, checkpointing's second forward, the VAE / text encoders
  when not cached) over the GPU's dense peak for the compute precision (`GPUS`) times an assumed achievable MFU.

None of the constants is calibrated against real runs yet (no GPU was at hand when this was written): they are
named here so that measured runs (benchmarks/train_step.py reports peak memory and MFU) can set them.
"""

from __future__ import annotations

import functools
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any, Callable, Iterator

from ..config.schema import LorakitConfig
from ..errors import LorakitError

if TYPE_CHECKING:
    from .flops import MemoryProbe, TrainingFlops

GIB = 2**30  # memory is printed in GiB (a "24 GB" card has 24 GiB)
CUDA_CONTEXT_BYTES = int(0.6 * GIB)  # CUDA context, cuBLAS/cuDNN workspaces: outside torch's allocator counts
ALLOCATOR_SLACK = 0.10  # the caching allocator's fragmentation above the peak allocated
FIT_FRACTION = 0.90  # auto_memory keeps the estimate below this share of the GPU's memory
DEFAULT_MFU = 0.30  # assumed share of the dense peak a UNet training step achieves (uncalibrated)
FP8 = "float8_e4m3fn"


@dataclass(frozen=True)
class Gpu:
    """A GPU's dense peak TFLOPS per compute precision (no sparsity), its memory, and the MFU assumed on it."""

    name: str
    memory_gib: float | None  # as the vendor states it ("80 GB"), which is GiB in practice
    tflops: dict[str, float]  # "bf16", "fp16", "tf32", "fp32"; a missing key = not supported
    keys: tuple[str, ...]  # spellings a device name or --gpu contains
    mfu: float = DEFAULT_MFU
    note: str = ""


# Vendor datasheets (dense tensor-core peaks; GeForce with fp32 accumulation, as PyTorch uses); Apple: fp32 GPU
# peaks, fp16/bf16 run at about the same rate on MPS.
GPUS: tuple[Gpu, ...] = (
    Gpu("NVIDIA H200", 141, {"bf16": 989, "fp16": 989, "tf32": 495, "fp32": 67}, ("H200",)),
    Gpu("NVIDIA H100 SXM", 80, {"bf16": 989, "fp16": 989, "tf32": 495, "fp32": 67}, ("H100",)),
    Gpu("NVIDIA H100 PCIe", 80, {"bf16": 756, "fp16": 756, "tf32": 378, "fp32": 51}, ("H100 PCIE",)),
    Gpu("NVIDIA A100 80GB", 80, {"bf16": 312, "fp16": 312, "tf32": 156, "fp32": 19.5}, ("A100",)),
    Gpu("NVIDIA A100 40GB", 40, {"bf16": 312, "fp16": 312, "tf32": 156, "fp32": 19.5}, ("A100 40GB", "A100 SXM4 40GB",
                                                                                        "A100 PCIE 40GB")),
    Gpu("NVIDIA L4", 24, {"bf16": 121, "fp16": 121, "tf32": 60, "fp32": 30}, ("L4",)),
    Gpu("NVIDIA RTX 4090", 24, {"bf16": 165, "fp16": 165, "tf32": 83, "fp32": 83}, ("RTX 4090", "4090")),
    Gpu("NVIDIA RTX 3090", 24, {"bf16": 71, "fp16": 71, "tf32": 36, "fp32": 36}, ("RTX 3090", "3090")),
    Gpu("NVIDIA RTX 3060", 12, {"bf16": 25, "fp16": 25, "tf32": 13, "fp32": 13}, ("RTX 3060", "3060")),
    Gpu("NVIDIA T4", 16, {"fp16": 65, "fp32": 8.1}, ("T4",), note="Turing: no bf16, no TF32"),
    Gpu("Apple M1 Max", None, {"bf16": 10.4, "fp16": 10.4, "fp32": 10.4}, ("M1 MAX",), 0.25, "rough"),
    Gpu("Apple M2 Max", None, {"bf16": 13.6, "fp16": 13.6, "fp32": 13.6}, ("M2 MAX", "MPS", "APPLE"), 0.25, "rough"),
    Gpu("Apple M2 Ultra", None, {"bf16": 27.2, "fp16": 27.2, "fp32": 27.2}, ("M2 ULTRA",), 0.25, "rough"),
    Gpu("Apple M3 Max", None, {"bf16": 16.4, "fp16": 16.4, "fp32": 16.4}, ("M3 MAX",), 0.25, "rough"),
    Gpu("Apple M4 Max", None, {"bf16": 18.4, "fp16": 18.4, "fp32": 18.4}, ("M4 MAX",), 0.25, "rough"),
)

# optimizer → (states per trained value, bytes per state; 0 = the parameter's own dtype). sd-scripts' optimizers:
# torch AdamW exp_avg/exp_avg_sq, SGD momentum_buffer; lion_pytorch exp_avg; prodigyopt s/p0/exp_avg/exp_avg_sq;
# dadaptation (dadapt_adam, dadapt_adam_preprint: s/exp_avg/exp_avg_sq; dadapt_adagrad alphak/sk/x0; dadapt_lion
# exp_avg/s; dadapt_sgd z/s/x0); bitsandbytes 8-bit: uint8 states (fp32 below 4096 values, min_8bit_size)
OPTIMIZER_STATES: dict[str, tuple[int, int]] = {
    "AdamW": (2, 0), "Lion": (1, 0), "SGDNesterov": (1, 0), "Prodigy": (4, 0), "DAdaptation": (3, 0),
    "DAdaptAdam": (3, 0), "DAdaptAdaGrad": (3, 0), "DAdaptLion": (2, 0), "DAdaptSGD": (3, 0),
    "AdamW8bit": (2, 1), "PagedAdamW8bit": (2, 1), "Lion8bit": (1, 1), "PagedLion8bit": (1, 1),
    "SGDNesterov8bit": (1, 1),
}
BNB_MIN_8BIT = 4096


def optimizer_state_bytes(name: str, shapes: list[tuple[int, ...]], param_bytes: int) -> int:
    """Bytes of optimizer state for trained tensors of `shapes` (each `param_bytes` per value). Adafactor
    (transformers, beta1 unset as sd-scripts leaves it) keeps factored second moments: a row and a column vector
    over the last two dimensions of each matrix, the whole tensor for a vector."""
    total = 0
    for shape in shapes:
        numel = _numel(shape)
        if name == "Adafactor":
            total += 4 * (_numel(shape[:-1]) + _numel(shape[:-2] + shape[-1:]) if len(shape) >= 2 else numel)
            continue
        states, size = OPTIMIZER_STATES[name]
        if size == 1 and numel < BNB_MIN_8BIT:
            size = 4
        total += states * numel * (size or param_bytes)
    return total


def _numel(shape: tuple[int, ...]) -> int:
    out = 1
    for n in shape:
        out *= n
    return out


# -- GPUs -----------------------------------------------------------------------------------------------------------

def _words(text: str) -> str:
    return " " + re.sub(r"[^A-Z0-9]+", " ", text.upper()).strip() + " "


def find_gpu(name: str) -> Gpu:
    """The table's GPU a device name or a user's --gpu names ('h100', 'RTX 4090', '4090', 'NVIDIA L4'): the entry
    with the longest matching key."""
    words, compact = _words(name), re.sub(r"[^A-Z0-9]", "", name.upper())
    hits = [(len(k), g) for g in GPUS for k in g.keys
            if _words(k) in words or re.sub(r"[^A-Z0-9]", "", k) == compact]
    if not hits:
        raise LorakitError(f"--gpu {name!r}: not in the table of GPUs",
                           f"use one of: {', '.join(g.name for g in GPUS)}; or leave it out on the GPU machine")
    return max(hits, key=lambda h: h[0])[1]


def detected_gpu() -> Gpu | None:
    """This machine's GPU in the table: the CUDA device's name, or the Mac's chip under MPS; None otherwise."""
    import torch

    if torch.cuda.is_available():
        name = torch.cuda.get_device_name(0)
    elif torch.backends.mps.is_available():
        name = _apple_chip()
    else:
        return None
    try:
        return find_gpu(name)
    except LorakitError:
        return None


def _apple_chip() -> str:
    import subprocess

    try:
        out = subprocess.run(["sysctl", "-n", "machdep.cpu.brand_string"], capture_output=True, text=True, timeout=5)
        return out.stdout.strip() or "Apple"
    except (OSError, subprocess.SubprocessError):
        return "Apple"


def detected_vram() -> int | None:
    """Bytes of memory of this machine's training device: CUDA device 0's total, on a Mac the recommended maximum
    working set of the GPU (when torch exposes it); None on the CPU."""
    import torch

    if torch.cuda.is_available():
        return int(torch.cuda.get_device_properties(0).total_memory)
    if torch.backends.mps.is_available():
        recommended = getattr(torch.mps, "recommended_max_memory", None)
        return int(recommended()) if recommended else None
    return None


# -- what the run holds ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Setup:
    """The numbers of a config the estimate depends on, resolved ('auto' precisions decided for the GPU)."""

    width: int
    height: int
    text_windows: int
    batch: int
    accumulation: int
    compute: str  # "no", "fp16", "bf16"
    model: str  # "fp32", "fp16", "bf16"
    lora: str
    fp8: bool
    checkpointing: bool
    latents_cached: bool
    text_cached: bool
    text_trained: bool


def setup_of(cfg: LorakitConfig, gpu: Gpu | None = None) -> Setup:
    """The resolved setup: mixed_precision 'auto' means bf16 on a GPU with bf16 (the named one, else this
    machine's), else fp32; model_precision 'auto' follows it."""
    from ..data.captions import caption_rules_from

    t, d = cfg.train, cfg.data
    compute = t.mixed_precision
    if compute == "auto":
        if gpu is not None:
            compute = "bf16" if "bf16" in gpu.tflops and not gpu.name.startswith("Apple") else "no"
        else:
            from .device import resolve_auto

            compute = resolve_auto(cfg).train.mixed_precision
    model = {"no": "fp32"}.get(compute, compute) if t.model_precision == "auto" else t.model_precision
    trained = cfg.network.train_text_encoder
    width, height = d.max_size
    return Setup(width, height, (t.max_token_length or 75) // 75, t.train_batch_size, t.gradient_accumulation_steps,
                 compute, model, t.lora_precision, t.fp8_base, t.gradient_checkpointing,
                 t.cache_latents and not (d.color_aug or d.random_crop),
                 t.cache_text_encoder_outputs and not trained and not caption_rules_from(d).varies, trained)


@dataclass
class Measured:
    """What the meta-device models show for one setup (batch-independent; cached)."""

    weights: dict[str, int]  # component → bytes of its frozen weights
    network_shapes: list[tuple[int, ...]]
    network_bytes: int  # bytes of one copy of the trained values (weights, or their gradients)
    step: MemoryProbe  # the training step
    encode: MemoryProbe  # the VAE encoding one image (no gradients)
    flops: TrainingFlops  # the UNet's model FLOPs per image
    lora_flops: float
    text_flops: float  # the text encoders' forward, per caption
    vae_flops: float  # the VAE encoder's forward, per image
    latent_shape: tuple[int, ...]
    text_dims: tuple[int, int]  # (tokens, width) of a cached caption's hidden states
    text_bytes: int  # bytes per cached value of the text encoders' outputs


def _dtype(name: str) -> Any:
    import torch

    return {"no": torch.float32, "fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16,
            FP8: torch.float8_e4m3fn}[name]


def _model_source(cfg: LorakitConfig) -> tuple[str, Path | None]:
    """(family, folder of the architecture configs); folder None for a tiny model (built as it is, then moved to
    the meta device)."""
    from ..families import detect_family
    from ..families.names import RANDOM_MODELS, TINY_MODELS
    from ..families.single_file import default_arch, shipped_config

    family = detect_family(cfg.model)
    source = cfg.model.pretrained_model_name_or_path
    if source in TINY_MODELS:
        return family, None
    if source in RANDOM_MODELS:
        return family, shipped_config(RANDOM_MODELS[source][1])
    folder = Path(source).expanduser()
    if folder.is_dir():
        return family, folder
    return family, shipped_config(default_arch(family, cfg.model.v_parameterization))


def _meta_parts(cfg: LorakitConfig) -> Any:
    """A `ModelParts` whose pipeline holds meta-device models (what `attach_network` and `describe` read)."""
    from ..families import ModelParts, get_family
    from .flops import meta_component

    family_name, folder = _model_source(cfg)
    family = get_family(family_name)
    attrs = ("unet", "vae", *family.text_encoder_attrs)
    if folder is None:
        pipe = family.build_tiny()
        models = {a: getattr(pipe, a).to("meta") for a in attrs}
    else:
        models = {a: meta_component(folder, a) for a in attrs}
    return ModelParts(family, SimpleNamespace(**models), None, "meta")  # type: ignore[arg-type]


@functools.lru_cache(maxsize=16)
def _measure_cached(key: str) -> Measured:
    cfg_json, setup_json = json.loads(key)
    return _measure(LorakitConfig.model_validate(cfg_json), Setup(**setup_json))


def measure(cfg: LorakitConfig, setup: Setup) -> Measured:
    """`Measured` for a config and setup (cached: auto_memory asks again for each change it tries)."""
    shape = {k: v for k, v in vars(setup).items() if k not in ("batch", "accumulation", "latents_cached")}
    shape |= {"batch": 1, "accumulation": 1, "latents_cached": True, "text_cached": True}  # not measured
    relevant = {"model": cfg.model.model_dump(mode="json"), "network": cfg.network.model_dump(mode="json")}
    return _measure_cached(json.dumps([relevant, shape], sort_keys=True))


def _measure(cfg: LorakitConfig, setup: Setup) -> Measured:
    import torch

    from . import flops as fl

    parts, weights, trained, ranks = _prepared(cfg, setup)
    unet, vae, encoders = parts.unet, parts.vae, list(parts.text_encoders)
    window = encoders[0].config.max_position_embeddings if encoders else 77  # CLIP's 77 (tiny models: fewer)
    tokens = setup.text_windows * (window - 2) + 2  # windows joined as clip_text.join_windows does
    ids = torch.zeros(setup.text_windows, window, dtype=torch.long, device="meta")
    step_probe = fl.probe_memory(_step(unet, encoders, setup, ids, tokens), [unet, *encoders],
                                 None if setup.compute == "no" else _dtype(setup.compute))
    encode_probe, vae_flops, text_flops = _encoder_costs(vae, encoders, setup, ids)
    unet_flops = fl.count_training_flops(unet, setup.height, setup.width, tokens)
    lora_dtype = _dtype(setup.lora)
    latent = (unet.config.in_channels, setup.height // fl.LATENT_SCALE, setup.width // fl.LATENT_SCALE)
    return Measured(weights, [tuple(p.shape) for p in trained], sum(p.numel() for p in trained) *
                    lora_dtype.itemsize, step_probe, encode_probe, unet_flops,
                    fl.lora_flops_per_image(unet_flops, unet, ranks), text_flops, vae_flops, latent,
                    (tokens, unet.config.cross_attention_dim), _dtype(setup.model).itemsize)


def _prepared(cfg: LorakitConfig, setup: Setup) -> tuple[Any, dict[str, int], list[Any], dict[str, int]]:
    """The meta models in the run's precisions with the network attached as the run attaches it, checkpointing
    enabled as the run enables it: (parts, frozen weight bytes by component, trained parameters, UNet ranks)."""
    import torch

    from ..networks.attach import attach_network
    from ..networks.targets import select_targets
    from . import flops as fl

    parts = _meta_parts(cfg)
    unet, vae, encoders = parts.unet, parts.vae, list(parts.text_encoders)
    compute = None if setup.compute == "no" else _dtype(setup.compute)
    for module in (unet, *encoders):
        _cast_weights(module, _dtype(setup.model))
    _cast_weights(vae, torch.float32 if getattr(vae.config, "force_upcast", False) else _dtype(setup.model))
    plan = select_targets(parts, cfg.network)
    if not setup.text_trained:
        plan.text_encoders = [{} for _ in plan.text_encoders]
    with torch.device("meta"):
        trained = attach_network(parts, cfg.network, plan.components())
    for p in trained:
        p.data = p.data.to(_dtype(setup.lora))
    if setup.fp8:  # the frozen UNet's Linear/Conv weights, as train.fp8_base stores them
        for m in unet.modules():
            if isinstance(m, (torch.nn.Linear, torch.nn.Conv2d)) and not m.weight.requires_grad:
                m.weight = torch.nn.Parameter(m.weight.data.to(_dtype(FP8)), requires_grad=False)
    names = {"UNet": unet, "VAE": vae, **{f"text encoder {i + 1}" if len(encoders) > 1 else "text encoder": te
                                          for i, te in enumerate(encoders)}}
    weights = {name: sum(t.numel() * t.element_size() for t in (*m.parameters(), *m.buffers())
                         if not t.requires_grad) for name, m in names.items()}
    if setup.checkpointing:
        for m in [unet, *(encoders if setup.text_trained else [])]:
            fl.enable_checkpointing(m, compute)
    for m in (unet, *encoders):
        m.train()
    return parts, weights, trained, {path: rank for path, (rank, _alpha) in plan.unet.items()}


def _step(unet: Any, encoders: list[Any], setup: Setup, ids: Any, tokens: int) -> Callable[[], Any]:
    """One training step at batch 1 on meta tensors, returning the loss: latents noised in fp32 and cast at the
    UNet's input, the text encoders run (with gradients) only when trained, else their cached outputs."""
    import torch

    from . import flops as fl

    compute, model = (None if setup.compute == "no" else _dtype(setup.compute)), _dtype(setup.model)
    inputs = fl.unet_inputs(unet.config, setup.height, setup.width, tokens)
    width = unet.config.cross_attention_dim

    def step() -> torch.Tensor:
        latents = torch.empty(1, unet.config.in_channels, setup.height // fl.LATENT_SCALE,
                              setup.width // fl.LATENT_SCALE, device="meta")
        kwargs = {**inputs, "encoder_hidden_states": inputs["encoder_hidden_states"].to(model)}
        if setup.text_trained:
            outs = [te(ids, output_hidden_states=True) for te in encoders]
            hidden = torch.cat([o.hidden_states[-2] for o in outs], dim=-1).reshape(1, -1, width)
            kwargs["encoder_hidden_states"] = hidden[:, :tokens]  # (SDXL's pooled embedding: a placeholder)
        kwargs["sample"] = (latents + latents).to(compute or model)
        return (unet(**kwargs).sample.float() - latents).pow(2).mean()

    return step


def _encoder_costs(vae: Any, encoders: list[Any], setup: Setup, ids: Any) -> tuple[MemoryProbe, float, float]:
    """(the VAE encode's memory probe at batch 1, its FLOPs per image, the text encoders' forward FLOPs per
    caption), all without gradients, as the cache encodes."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from . import flops as fl

    pixels = torch.empty(1, 3, setup.height, setup.width, device="meta", dtype=next(vae.parameters()).dtype)
    with torch.no_grad():
        probe = fl.probe_memory(lambda: vae.encode(pixels).latent_dist.mean, [vae], None, backward=False)
        counts = []
        for run in (lambda: vae.encode(pixels), lambda: [te(ids) for te in encoders]):
            counter = FlopCounterMode(display=False)
            with counter:
                run()
            counts.append(float(counter.get_total_flops()))
    return probe, counts[0], counts[1]


def _cast_weights(module: Any, dtype: Any) -> None:
    """Floating-point parameters and buffers in `dtype` (diffusers' `.to(dtype)` warns about its keep-in-fp32
    lists, which the shipped models do not have)."""
    for t in (*module.parameters(), *module.buffers()):
        if t.is_floating_point():
            t.data = t.data.to(dtype)


# -- the estimate ---------------------------------------------------------------------------------------------------

@dataclass
class Estimate:
    """Peak memory by component (bytes) and time per step of one config on one GPU."""

    setup: Setup
    parts: list[tuple[str, int]]
    caching_peak: int  # while latents/captions are encoded: the VAE and text encoders on the GPU (0: none)
    model_flops_per_image: float  # MFU's numerator: UNet forward + input-gradient backward
    step_flops: float  # what the hardware computes per optimizer step
    gpu: Gpu | None
    seconds_per_step: float | None
    notes: list[str] = field(default_factory=list)
    model_name: str = ""

    @property
    def peak(self) -> int:
        """The larger of the training step's peak and the caching phase's."""
        return max(sum(b for _, b in self.parts), self.caching_peak)

    @property
    def images_per_second(self) -> float | None:
        if not self.seconds_per_step:
            return None
        return self.setup.batch * self.setup.accumulation / self.seconds_per_step


def estimate(cfg: LorakitConfig, gpu: Gpu | None = None, cached_items: tuple[int, int] | None = None) -> Estimate:
    """The estimate for `cfg` on `gpu` (None: no time, only memory). `cached_items`: (images, captions) the run
    caches on the GPU, when known (the data folder was scanned); their latents and text outputs stay there."""
    setup = setup_of(cfg, gpu)
    m = measure(cfg, setup)
    b = setup.batch
    parts = [("UNet weights" + (" (fp8)" if setup.fp8 else ""), m.weights["UNet"])]
    text_names = [n for n in m.weights if n.startswith("text encoder")]
    if not setup.text_cached:
        parts += [(f"{n} weights", m.weights[n]) for n in text_names]
    if not setup.latents_cached:
        parts.append(("VAE weights", m.weights["VAE"]))
    parts += [(f"network weights ({setup.lora})", m.network_bytes), ("network gradients", m.network_bytes),
              (f"optimizer state ({cfg.train.optimizer_type})",
               optimizer_state_bytes(cfg.train.optimizer_type, m.network_shapes, _dtype(setup.lora).itemsize))]
    activations = m.step.peak(b)
    if not setup.latents_cached:  # the VAE encodes before the UNet runs: the larger of the two transients counts
        activations = max(activations, m.encode.peak(b))
    parts.append((f"activations (batch {b}{', checkpointed' if setup.checkpointing else ''})", activations))
    if cached_items:
        images, captions = cached_items
        latent = 4 * _numel(m.latent_shape) * images if setup.latents_cached else 0
        text = m.text_bytes * _numel(m.text_dims) * captions if setup.text_cached else 0
        if latent + text:
            parts.append((f"cached latents / text ({images} images, {captions} captions)", latent + text))
    allocated = sum(n for _, n in parts)
    parts.append(("CUDA context + allocator", CUDA_CONTEXT_BYTES + int(ALLOCATOR_SLACK * allocated)))
    caching = 0
    if setup.latents_cached or setup.text_cached:  # prefill encodes before the UNet comes to the GPU (trainer.py)
        held = sum(v for k, v in m.weights.items() if k != "UNet") + (m.encode.peak(b) if setup.latents_cached else 0)
        caching = int(held * (1 + ALLOCATOR_SLACK)) + CUDA_CONTEXT_BYTES
    model = m.flops.total
    per_image = model + m.lora_flops + (m.flops.forward if setup.checkpointing else 0)
    per_image += 0 if setup.latents_cached else m.vae_flops
    if setup.text_trained:
        per_image += 2 * m.text_flops  # forward + its input-gradient backward
    elif not setup.text_cached:
        per_image += m.text_flops
    step = per_image * b * setup.accumulation
    seconds, notes = _seconds(step, setup, cfg, gpu)
    if cfg.train.mixed_precision == "auto":
        notes.insert(0, f"train.mixed_precision 'auto' is '{setup.compute}' on {gpu.name if gpu else 'this machine'}")
    return Estimate(setup, parts, caching, model, step, gpu, seconds, notes, cfg.model.pretrained_model_name_or_path)


def _seconds(step_flops: float, setup: Setup, cfg: LorakitConfig, gpu: Gpu | None) -> tuple[float | None, list[str]]:
    """Time per optimizer step on `gpu`, and the precision/MFU it assumed."""
    if gpu is None:
        return None, ["no GPU named or detected: time not estimated (name one with --gpu)"]
    key = {"bf16": "bf16", "fp16": "fp16"}.get(setup.compute, "tf32" if cfg.train.allow_tf32 else "fp32")
    if key not in gpu.tflops:
        fallback = "fp32"
        note = f"{gpu.name} has no fast {key}: timed at its {fallback} peak"
        key = fallback
    else:
        note = ""
    seconds = step_flops / (gpu.tflops[key] * 1e12 * gpu.mfu)
    notes = [f"time: {gpu.tflops[key]:g} TFLOPS dense {key} peak × assumed MFU {gpu.mfu:.0%}"
             + (f" ({gpu.note})" if gpu.note else "")]
    return seconds, notes + ([note] if note else [])


# -- auto_memory ----------------------------------------------------------------------------------------------------

def fit_to_memory(cfg: LorakitConfig, vram_bytes: int, gpu: Gpu | None = None) -> tuple[LorakitConfig, list[str]]:
    """The config changed, in this order and only as far as needed, until the estimate fits in FIT_FRACTION of
    `vram_bytes`: gradient checkpointing on; latents, then text-encoder outputs cached; train_batch_size halved
    while gradient_accumulation_steps doubles (the images per optimizer step stay the same; an odd batch goes to
    1 with its size folded into the accumulation); fp8_base on (with mixed_precision bf16/fp16 only). Returns the
    config and one line per change; when even all of them do not fit, a last line says so (the run then starts
    anyway and the out-of-memory handling applies)."""
    limit = int(FIT_FRACTION * vram_bytes)
    lines: list[str] = []
    current = estimate(cfg, gpu).peak
    for key, old, new in _changes(cfg, setup_of(cfg, gpu).compute):
        if current <= limit:
            break
        train = cfg.train.model_copy(update=new)
        cfg = cfg.model_copy(update={"train": train})
        lines.append(f"{key}: {old} → {_show(new, key)} (estimate {current / GIB:.1f} GiB > {limit / GIB:.1f} GiB "
                     f"= {FIT_FRACTION:.0%} of {vram_bytes / GIB:.1f} GiB)")
        current = estimate(cfg, gpu).peak
    if current > limit:
        lines.append(f"the estimate is still {current / GIB:.1f} GiB > {limit / GIB:.1f} GiB after every change "
                     "auto_memory makes: the run starts anyway (out of GPU memory, train.oom_split_retry applies)")
    return cfg, lines


def _show(new: dict[str, Any], key: str) -> str:
    if key.startswith("train.train_batch_size"):
        return f"{new['train_batch_size']} × {new['gradient_accumulation_steps']}"
    value = next(iter(new.values()))
    return str(value).lower() if isinstance(value, bool) else str(value)


def _changes(cfg: LorakitConfig, compute: str) -> Iterator[tuple[str, str, dict[str, Any]]]:
    """(key, old value shown, new values) of each change auto_memory may make, in order."""
    t = cfg.train
    if not t.gradient_checkpointing:
        yield "train.gradient_checkpointing", "false", {"gradient_checkpointing": True}
    if not t.cache_latents:
        yield "train.cache_latents", "false", {"cache_latents": True}
    if not t.cache_text_encoder_outputs and not cfg.network.train_text_encoder:
        yield "train.cache_text_encoder_outputs", "false", {"cache_text_encoder_outputs": True}
    batch, accumulation = t.train_batch_size, t.gradient_accumulation_steps
    while batch > 1:
        new_batch = batch // 2 if batch % 2 == 0 else 1
        new_acc = accumulation * batch // new_batch
        yield ("train.train_batch_size × gradient_accumulation_steps", f"{batch} × {accumulation}",
               {"train_batch_size": new_batch, "gradient_accumulation_steps": new_acc})
        batch, accumulation = new_batch, new_acc
    if not t.fp8_base and compute in ("bf16", "fp16"):
        yield "train.fp8_base", "false", {"fp8_base": True}
