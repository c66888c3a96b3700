"""The one typed config model. Every field is documented and defaulted; names follow kohya sd-scripts' where one exists.

`extra="forbid"` everywhere: an unknown key is an error (the loader names the file and the nearest valid key).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator

from ..data.settings import DataSection
from .mode_sections import (MODE_SECTIONS, DifferenceModeSection, DreamBoothModeSection,  # noqa: F401 - re-exported
                            IlecoModeSection, LoraModeSection, ModeSection, PromptPair, SecondPassSection)
from .section import Section
from .tool_sections import BatchSection, BenchSection, StorageSection  # noqa: F401 - re-exported

CONFIG_VERSION = 3


class ModelSection(Section):
    """The base model the LoRA is trained against."""

    pretrained_model_name_or_path: str = Field(
        "tiny-sd1",
        description="Diffusers folder, single-file .safetensors checkpoint, or a built-in tiny model "
        "(tiny-sd1, tiny-sd2-v, tiny-sdxl) or full-size random one (random-sd15, random-sd21-v, random-sdxl).",
    )
    family: Literal["auto", "sd1", "sd2", "sdxl"] = Field(
        "auto", description="Model family; 'auto' detects it from the folder or checkpoint."
    )
    v_parameterization: bool | None = Field(
        None, description="Force v-prediction on/off (SD 2.x 768 models); unset = read it from the model."
    )
    vae: str | None = Field(None, description="Optional VAE override: a diffusers folder or a .safetensors file.")
    allow_pickle: bool = Field(
        False, description="Allow loading a .ckpt/.pt pickle checkpoint (it can run arbitrary code; only trust your own)."
    )


class NetworkSection(Section):
    """The adapter: what is trained and its shape."""

    network_module: Literal["lora", "locon", "loha", "lokr"] = Field(
        "lora",
        description="Adapter type: lora (kohya LoRA; TrainTrain 'lierla'), locon (LoRA on 3×3 convolutions too; "
        "TrainTrain 'c3lier'), loha (LyCORIS LoHa) or lokr (LyCORIS LoKr). See docs/networks.md.",
    )
    use_dora: bool = Field(
        False, description="DoRA: also train a per-output-channel magnitude (LoRA/LoCon only; LyCORIS 'dora_wd')."
    )
    lokr_factor: int = Field(
        -1, description="LoKr: Kronecker factor of each dimension (LyCORIS 'factor'); -1 = automatic, near the "
        "square root.",
    )
    network_dim: int = Field(16, ge=1, le=1024, description="LoRA rank (dim).")
    network_alpha: float = Field(8.0, gt=0, description="LoRA alpha; the update is scaled by alpha / dim.")
    network_dropout: float = Field(
        0.0, ge=0, lt=1, description="Neuron dropout on the LoRA path during training (LoRA/LoCon/DoRA): where "
        "dropout_placement says; kohya's network_dropout (0.1 is typical)."
    )
    dropout_placement: Literal["kohya", "peft"] = Field(
        "kohya", description="Where network_dropout drops: 'kohya' on the down projection's output (sd-scripts' "
        "networks.lora), 'peft' on the adapter's input (peft's lora_dropout)."
    )
    rank_dropout: float = Field(
        0.0, ge=0, lt=1, description="Rank dropout during training: LoRA/LoCon drop whole ranks of each module's "
        "update per sample, the kept ones scaled by 1/(1 − p) (sd-scripts' networks.lora); LoKr drops output rows of "
        "the update, unscaled (LyCORIS); LoHa and DoRA refuse it. 0.1–0.3 is typical."
    )
    module_dropout: float = Field(
        0.0, ge=0, lt=1, description="Skip each module's update entirely with this probability per step during "
        "training (kohya's and LyCORIS's module_dropout)."
    )
    target_modules: list[str] = Field(
        default_factory=list,
        description="UNet module names (suffixes, e.g. to_q, to_k, to_v, to_out.0) that receive an adapter; empty = "
        "kohya's set for the network type (every Linear and 1×1 conv of the transformer blocks; locon/loha/lokr "
        "add the resnets and down/upsamplers). See docs/networks.md.",
    )
    train_text_encoder: bool = Field(False, description="Also train LoRA on the text encoder(s).")
    text_encoder_target_modules: list[str] = Field(
        default_factory=list,
        description="Text-encoder module names (suffixes, e.g. q_proj, k_proj, v_proj, out_proj) that receive an "
        "adapter when train_text_encoder is on; empty = kohya's set (attention and MLP of every layer).",
    )
    conv_dim: int | None = Field(
        None, ge=0, le=1024,
        description="Rank of the 3×3 convolutions (resnets, down/upsamplers) that locon, loha and lokr adapt; "
        "0 or unset = network_dim (as TrainTrain). Plain lora adapts no 3×3 convolution (kohya's networks.lora "
        "with conv_dim is network_module = 'locon' here).",
    )
    conv_alpha: float | None = Field(
        None, ge=0, description="Alpha of the 3×3 convolutions; 0 or unset = network_alpha (as TrainTrain and "
        "LyCORIS; sd-scripts' networks.lora defaults to 1, and `config import` writes that for its configs)."
    )
    blocks: list[str] = Field(
        default_factory=list,
        description="Train only these blocks (TrainTrain's network blocks): BASE (the text encoders), IN00…, MID, "
        "OUT00… (SD1/SD2 IN00–IN11/OUT00–OUT11, SDXL IN00–IN08/OUT00–OUT08); empty = all.",
    )
    block_dims: list[int] = Field(
        default_factory=list,
        description="Rank per UNet block in sd-scripts' order (25 values for SD1/SD2: IN00–IN11, MID, OUT00–OUT11; "
        "23 for SDXL: time_embed, IN00–IN08, 3 middle-block parts, OUT00–OUT08, out) for its Linear/1×1 layers; 0 = "
        "not trained (the block's 3×3 convolutions follow conv_block_dims, else conv_dim); empty = network_dim "
        "everywhere.",
    )
    block_alphas: list[float] = Field(
        default_factory=list,
        description="Alpha per UNet block, in block_dims' order and length; empty = network_alpha everywhere. "
        "Only with block_dims (sd-scripts reads it only then).",
    )
    conv_block_dims: list[int] = Field(
        default_factory=list,
        description="Rank of the 3×3 convolutions per UNet block, in block_dims' order and length (sd-scripts' "
        "conv_block_dims; locon/loha/lokr, only with block_dims); 0 = the block's convolutions not trained; "
        "empty = conv_dim in every block, whatever block_dims says.",
    )
    conv_block_alphas: list[float] = Field(
        default_factory=list,
        description="Alpha of the 3×3 convolutions per UNet block, in block_dims' order and length; only with "
        "conv_block_dims; empty = conv_alpha everywhere.",
    )
    network_element: Literal["full", "cross_attention", "self_attention"] = Field(
        "full",
        description="UNet layers to train (TrainTrain's network element): full, cross_attention (attn2: "
        "the prompt's layers) or self_attention (attn1); not with loha.",
    )

    @field_validator("blocks", mode="before")
    @classmethod
    def _block_spelling(cls, value: object) -> object:
        """TrainTrain / LoRA Block Weight spellings ('M00', 'in4', 'base') in lorakit's ('MID', 'IN04', 'BASE');
        names that are no block at all are refused (the family's exact list is checked by config validate)."""
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            return value
        from ..networks.targets import canonical_block, is_block_name  # lazy: targets imports this module

        names = list(dict.fromkeys(canonical_block(v) for v in value))
        bad = [v for v in names if not is_block_name(v)]
        if bad:
            raise ValueError(f"{', '.join(bad)}: not a block name; use BASE, IN00…, MID, OUT00…")
        return names

    @field_validator("block_dims", "conv_block_dims")
    @classmethod
    def _block_dim_range(cls, value: list[int]) -> list[int]:
        """Each rank is 0 (block not trained) to 1024, like network_dim and conv_dim."""
        bad = [v for v in value if not 0 <= v <= 1024]
        if bad:
            raise ValueError(f"{bad}: each block dim is 0 (not trained) to 1024")
        return value

    @field_validator("block_alphas", "conv_block_alphas")
    @classmethod
    def _block_alpha_range(cls, value: list[float]) -> list[float]:
        """Each alpha is positive, like network_alpha (the kohya importer turns sd-scripts' 0 into the rank)."""
        if any(v <= 0 for v in value):
            raise ValueError(f"{[v for v in value if v <= 0]}: each block alpha must be > 0")
        return value

    @field_validator("network_element", mode="before")
    @classmethod
    def _element_spelling(cls, value: object) -> object:
        """TrainTrain's spellings: Full, CrossAttention, SelfAttention."""
        names = {"full": "full", "crossattention": "cross_attention", "selfattention": "self_attention"}
        return names.get(value.replace("_", "").lower(), value) if isinstance(value, str) else value
    network_weights: str | None = Field(
        None,
        description="Start from an existing LoRA .safetensors file (or a run folder holding one); its rank must "
        "match network_dim.",
    )

    @field_validator("network_module", mode="before")
    @classmethod
    def _network_alias(cls, value: object) -> object:
        """TrainTrain's names: lierla is plain LoRA, c3lier is LoCon."""
        aliases = {"lierla": "lora", "c3lier": "locon"}
        return aliases.get(value.lower(), value.lower()) if isinstance(value, str) else value

    @model_validator(mode="after")
    def _network_combinations(self) -> "NetworkSection":
        """Refuse what peft (and the UIs) cannot train: DoRA exists only for LoRA/LoCon; a LoKr factor is -1 or
        at least 1."""
        if self.use_dora and self.network_module in ("loha", "lokr"):
            raise ValueError(f"use_dora works with network_module 'lora' or 'locon', not '{self.network_module}' "
                             "(peft has no DoRA for LoHa/LoKr)")
        if self.lokr_factor == 0 or self.lokr_factor < -1:
            raise ValueError(f"lokr_factor {self.lokr_factor}: use -1 (automatic) or a factor of at least 1")
        return self


class TrainSection(Section):
    """Optimisation: steps, learning rates, precision, tricks."""

    learning_rate: float = Field(1e-4, ge=0, description="Learning rate of the UNet LoRA.")
    text_encoder_lr: float | None = Field(
        None, ge=0, description="Learning rate of the text-encoder LoRA; unset = learning_rate."
    )
    optimizer_type: Literal[
        "AdamW", "AdamW8bit", "PagedAdamW8bit", "Lion", "Lion8bit", "PagedLion8bit", "SGDNesterov",
        "SGDNesterov8bit", "Prodigy", "DAdaptation", "DAdaptAdam", "DAdaptAdaGrad", "DAdaptLion", "DAdaptSGD",
        "Adafactor",
    ] = Field(
        "AdamW",
        description="Optimizer, by sd-scripts' name and from the package sd-scripts uses: AdamW and SGDNesterov "
        "(torch), AdamW8bit / PagedAdamW8bit / Lion8bit / PagedLion8bit / SGDNesterov8bit (bitsandbytes), Lion "
        "(lion-pytorch), Prodigy (prodigyopt), DAdaptation (= DAdaptAdamPreprint), DAdaptAdam, DAdaptAdaGrad, "
        "DAdaptLion, DAdaptSGD (dadaptation), Adafactor (transformers; relative_step=True in optimizer_args uses "
        "its own step size and needs lr_scheduler = 'adafactor'). Prodigy and D-Adaptation find the step size "
        "themselves: use learning_rate 1.0.",
    )
    optimizer_args: list[str] = Field(
        default_factory=list, description="Extra optimizer arguments as key=value strings, e.g. 'weight_decay=0.01'."
    )
    lr_scheduler: Literal[
        "constant", "constant_with_warmup", "linear", "cosine", "cosine_with_restarts", "polynomial", "adafactor",
        "step",
    ] = Field(
        "constant",
        description="Learning-rate schedule (warm-up applies to all); 'adafactor' is Adafactor's own relative step "
        "(optimizer_type = 'Adafactor' with relative_step=True), as sd-scripts; 'step' multiplies the learning rate "
        "by lr_step_rules (TrainTrain's piecewise_constant).",
    )
    lr_scheduler_type: str | None = Field(
        None,
        description="Any learning-rate scheduler class by name, instead of lr_scheduler: a torch.optim.lr_scheduler "
        "class ('CosineAnnealingLR') or a full 'module.Class' path, built with lr_scheduler_args (sd-scripts' "
        "--lr_scheduler_type); stepped once per optimizer step; no warm-up is added.",
    )
    lr_scheduler_power: float = Field(1.0, gt=0, description="Power of the 'polynomial' schedule (sd-scripts' "
                                      "lr_scheduler_power; 1 = linear decay).")
    lr_scheduler_args: list[str] = Field(
        default_factory=list,
        description="Extra scheduler arguments as key=value strings, checked against the scheduler's parameters.",
    )
    lr_step_rules: str | None = Field(
        None,
        validate_default=True,
        description="The rules of lr_scheduler = 'step' (and only of it), TrainTrain's 'lr step rules' (diffusers' "
        "piecewise_constant): 'm1:s1,m2:s2,…,m' multiplies the learning rate by m1 before step s1, by m2 from s1 "
        "until s2, …, and by m from the largest step on; steps count from 0 and include the warm-up, which ramps "
        "the multiplier from 0. E.g. '1:500,0.5:800,0.1'.",
    )

    @field_validator("lr_step_rules")
    @classmethod
    def _step_rules(cls, value: str | None, info: ValidationInfo) -> str | None:
        """Rules only with lr_scheduler 'step', which needs them, in TrainTrain's syntax."""
        scheduler, own_class = info.data.get("lr_scheduler"), info.data.get("lr_scheduler_type")
        if value is None:
            if scheduler == "step" and not own_class:
                raise ValueError("lr_scheduler = 'step' needs lr_step_rules, e.g. '1:500,0.5:800,0.1'")
            return value
        if scheduler != "step" or own_class:
            raise ValueError("is read only by lr_scheduler = 'step' (without lr_scheduler_type): set that, or "
                             "remove lr_step_rules")
        from ..engine.schedule import parse_step_rules  # light: no torch at import

        parse_step_rules(value)  # its ValueError names what is wrong
        return value
    lr_warmup_steps: int = Field(0, ge=0, description="Steps of linear warm-up from 0 to the learning rate.")
    lr_warmup_ratio: float | None = Field(
        None,
        ge=0,
        lt=1,
        description="Warm-up as a fraction of the total steps (kohya's lr_warmup_steps < 1); "
        "excludes lr_warmup_steps.",
    )
    stop_text_encoder_training: int | None = Field(
        None, ge=0, description="Freeze the text encoder after this many steps; unset = train it to the end."
    )
    lr_scheduler_num_cycles: int = Field(1, ge=1, description="Restarts for cosine_with_restarts.")
    max_train_steps: int | None = Field(
        None, ge=1, description="Total optimizer steps; unset = max_train_epochs × steps per epoch."
    )
    max_train_epochs: int = Field(1, ge=1, description="Epochs, used when max_train_steps is unset.")
    train_batch_size: int = Field(1, ge=1, description="Images per batch.")
    gradient_accumulation_steps: int = Field(1, ge=1, description="Batches accumulated per optimizer step.")
    mixed_precision: Literal["auto", "no", "fp16", "bf16"] = Field(
        "auto", description="Autocast precision of the forward pass; 'auto' = bf16 on a GPU that supports it "
        "(NVIDIA Ampere or newer), else fp32 ('no'). The run's resolved config records the choice.")
    model_precision: Literal["auto", "fp32", "fp16", "bf16"] = Field(
        "auto", description="Precision of the frozen model's weights (TrainTrain's 'train model precision'); "
        "'auto' = mixed_precision's (fp32 without it).")
    lora_precision: Literal["fp32", "fp16", "bf16"] = Field(
        "fp32", description="Precision of the trained network's weights, gradients and optimizer state "
        "(TrainTrain's 'train lora precision'); fp16/bf16 are sd-scripts' full_fp16/full_bf16 and need the same "
        "mixed_precision.")
    fp8_base: bool = Field(
        False, description="Store the frozen UNet's Linear/Conv weights in float8 (e4m3) and upcast them per layer "
        "(sd-scripts' --fp8_base): about half the UNet's memory, for 8 GB cards; needs mixed_precision fp16/bf16.")
    gradient_checkpointing: bool = Field(False, description="Recompute activations to save memory (slower).")
    auto_memory: bool = Field(
        False, description="Fit the run to the GPU's memory before it starts: turn on gradient checkpointing, "
        "trade batch size for gradient accumulation (the same images per step) and fp8_base, as far as the "
        "estimate (`lorakit estimate`) says is needed; each change is logged.")
    torch_compile: bool = Field(
        False, description="Compile each UNet block with torch.compile (regional: the first steps of each bucket "
        "size take longer, later ones are faster; CUDA, or the CPU with a C++ compiler). Not bit-identical to eager "
        "under bf16.")
    channels_last: bool = Field(False, description="Keep the UNet's convolutions in channels-last memory format "
                                "(often faster with bf16/fp16 on NVIDIA).")
    allow_tf32: bool = Field(True, description="TF32 matmuls and convolutions on NVIDIA Ampere+ (fp32 parts run "
                             "faster with a 10-bit mantissa); off = exact fp32.")
    cudnn_benchmark: bool = Field(True, description="Let cuDNN pick the fastest convolution algorithm per input "
                                  "shape (the first step of each bucket size is slower).")
    dataloader_workers: int = Field(
        2, ge=0, le=64, description="Processes that decode and resize images ahead of the GPU when images are "
        "read each step (latents not cached, or augmented); 0 = in the training process (kohya's "
        "max_data_loader_n_workers).")
    sdpa: bool = Field(True, description="Use PyTorch scaled-dot-product attention.")
    min_snr_gamma: float | None = Field(None, gt=0, description="Min-SNR loss weighting gamma (5 is typical).")
    noise_offset: float = Field(0.0, ge=0, le=1, description="Noise offset (0 = off; 0.05–0.1 brightens range).")
    noise_offset_random_strength: bool = Field(
        False, description="Scale the noise offset by a uniform random factor in [0, 1), one per batch "
        "(sd-scripts).")
    adaptive_noise_scale: float | None = Field(
        None, description="Add |mean of each latent channel| × this to the noise offset (sd-scripts; needs "
        "noise_offset).")
    multires_noise_iterations: int | None = Field(
        None, ge=1, le=16, description="Multi-resolution (pyramid) noise: levels added to the noise (6–10 is "
        "typical); unset = off. With noise_offset too, the offset is added first (as sd-scripts).")
    multires_noise_discount: float = Field(
        0.3, ge=0, le=1, description="Weight of each coarser level of multi-resolution noise (discount^level).")
    ip_noise_gamma: float | None = Field(
        None, ge=0, le=1, description="Input perturbation: the noisy latents are made from noise + gamma × fresh "
        "noise, while the target stays the noise (0.1 is typical); unset = off.")
    ip_noise_gamma_random_strength: bool = Field(
        False, description="Scale ip_noise_gamma by a uniform random factor in [0, 1) per step (sd-scripts).")
    min_timestep: int | None = Field(
        None, ge=0, le=1000, description="Smallest training timestep (inclusive); unset = 0.")
    max_timestep: int | None = Field(
        None, ge=1, le=1000, description="Largest training timestep (exclusive); unset = the schedule's length "
        "(1000).")
    debiased_estimation_loss: bool = Field(
        False, description="Weight each sample's loss by 1/√SNR(t) (debiased estimation; sd-scripts).")
    scale_v_pred_loss_like_noise_pred: bool = Field(
        False, description="v-prediction: weight the loss by SNR/(SNR+1), so it scales like an epsilon loss "
        "(sd-scripts).")
    v_pred_like_loss: float | None = Field(
        None, ge=0, description="Add this × a v-prediction-like loss term to an epsilon model's loss "
        "(sd-scripts' v_pred_like_loss); unset = off.")
    zero_terminal_snr: bool = Field(
        False, description="Rescale the noise schedule so its last timestep is pure noise (zero terminal SNR, "
        "Lin et al.; sd-scripts).")
    masked_loss: bool = Field(
        False, description="Weight the loss by a per-image mask: the image's alpha channel (data.alpha_mask) or "
        "the same-named image in data.conditioning_data_dir (white = learn, black = ignore), as sd-scripts.")
    scale_weight_norms: float | None = Field(
        None, gt=0, description="Max-norm regularisation: after each step, scale down every LoRA module whose "
        "weight update's norm exceeds this (1.0 is typical; sd-scripts); the number scaled is logged.")
    clip_skip: int | None = Field(
        None, ge=1, le=12, description="Use the text encoder's output this many layers from the end (2 = the "
        "penultimate layer, as NovelAI-style SD1 models); unset = 1 (the last). SDXL always uses the "
        "penultimate layer and ignores it, as sd-scripts.")
    max_token_length: Literal[75, 150, 225] | None = Field(
        None, description="Caption length in tokens: 150 or 225 encode longer captions in 75-token chunks "
        "(kohya's long prompts); unset = 75.")
    max_grad_norm: float = Field(1.0, ge=0, description="Gradient clipping norm (0 = off).")
    seed: int = Field(42, description="Random seed; the same seed and data give the same LoRA.")
    cache_latents: bool = Field(True, description="Encode each image with the VAE once and reuse the latents.")
    cache_text_encoder_outputs: bool = Field(
        True, description="Encode each caption once (ignored while the text encoder is trained)."
    )
    log_every_n_steps: Annotated[int, Field(ge=1)] | Literal["auto"] = Field(
        "auto", description="How often the loss is read back from the device and logged (each read makes the host "
        "wait for the GPU); 'auto' = every 10 steps on a GPU, every step on the CPU. The run's config.toml records "
        "the number.")
    validate_every_n_steps: int = Field(
        50, ge=1, description="Validation loss on the held-out images every N steps (when there are any)."
    )
    max_nonfinite_steps: int = Field(
        5, ge=0,
        description="A step whose loss or gradients are NaN/inf is skipped (the weights stay as they were); after "
        "this many such steps in a row the run saves a checkpoint and stops (exit status 6). 0 turns the check off "
        "(saves one host sync per step; a NaN then ruins the LoRA).",
    )
    oom_split_retry: bool = Field(
        True,
        description="When a step runs out of GPU memory, retry it once with each batch split in two halves "
        "(gradient accumulation: the same images, less memory; each half draws its own noise); if that fails "
        "too, the run saves a checkpoint and exits with status 5.",
    )
    log_with: Literal["none", "tensorboard"] = Field(
        "none",
        description="Also log loss, lr and val_loss per step for TensorBoard, in runs/<run_id>/train/tensorboard/ "
        "(needs `pip install tensorboard`; view with `tensorboard --logdir runs`). log.csv and run.log are always "
        "written.",
    )


class OutputSection(Section):
    """Where and how results are written. A run never overwrites another."""

    output_dir: str = Field("runs", description="Folder that holds one sub-folder per run.")
    output_name: str = Field(
        "lora", min_length=1, description="File name (without extension) of the LoRA."
    )
    run_id: str | None = Field(None, description="Run folder name; unset = a timestamp.")
    save_precision: Literal["fp32", "fp16", "bf16"] = Field("fp16", description="Precision of the saved weights.")
    save_every_n_steps: int | None = Field(None, ge=1, description="Also save the LoRA file every N steps "
                                           "(<output_name>-step<N>; kept; resumable state is [checkpoint]).")
    save_every_n_epochs: int | None = Field(None, ge=1, description="Also save the LoRA file at the end of every "
                                            "N-th epoch (<output_name>-<epoch, 6 digits>; sd-scripts' naming).")
    save_last_n_epochs: int | None = Field(
        None, ge=1, description="Keep only the last N epoch saves (older ones deleted; sd-scripts).")
    save_last_n_steps: int | None = Field(
        None, ge=1, description="Keep only the step saves of the last N steps (older ones deleted; sd-scripts).")
    save_format: Literal["kohya", "peft", "both"] = Field(
        "kohya", description="kohya (A1111/ComfyUI/diffusers), peft (diffusers adapter folder), or both."
    )

    @field_validator("output_name", "run_id")
    @classmethod
    def _single_name(cls, value: str | None) -> str | None:
        """One file/folder name, so nothing is written outside output_dir."""
        if value is not None and (value in (".", "..") or any(c in value for c in "/\\\0")):
            raise ValueError("must be a plain name without '/', '\\' or '..'")
        return value


class SampleSection(Section):
    """Sample images rendered with the LoRA during training (kohya's sample_prompts): at step 0, every N steps
    and/or epochs, and at the end, under runs/<run_id>/samples/ with a contact sheet. Off while `prompts` and
    `prompts_file` are empty. Sampling never changes what the run trains."""

    prompts: list[str] = Field(
        default_factory=list,
        description="Prompts to render; each may end with kohya's per-prompt options --n (negative prompt), --w, "
        "--h, --s (steps), --l (guidance scale), --d (seed).",
    )
    prompts_file: str | None = Field(
        None, description="Text file with one prompt per line (kohya's format, with the same options; '#' lines "
        "and empty lines skipped); added after `prompts`.",
    )
    every_n_steps: int | None = Field(None, ge=1, description="Render the samples every N steps.")
    every_n_epochs: int | None = Field(
        None, ge=1, description="Render the samples at the end of every N epochs (with every_n_steps, both apply).")
    negative_prompt: str = Field("", description="Negative prompt of every sample (a prompt's --n overrides it).")
    steps: int = Field(20, ge=1, le=1000, description="Inference steps (a prompt's --s overrides it).")
    guidance_scale: float = Field(7.0, ge=0, description="Classifier-free guidance scale (--l overrides it).")
    seed: int = Field(1, ge=0, le=2**63 - 1,
                      description="Seed of the samples (--d overrides it); the same for every render.")
    width: int | None = Field(
        None, ge=64, le=4096,
        description="Sample width, a multiple of 8 (--w overrides it); unset = the training size.")
    height: int | None = Field(
        None, ge=64, le=4096,
        description="Sample height, a multiple of 8 (--h overrides it); unset = the training size.")

    @field_validator("width", "height")
    @classmethod
    def _multiple_of_8(cls, value: int | None) -> int | None:
        if value is not None and value % 8:
            raise ValueError(f"{value}: must be a multiple of 8 (the VAE works on 8×8 pixel blocks)")
        return value


class CheckpointSection(Section):
    """Training state for `lorakit train --resume`: adapter weights, optimizer, scheduler, every RNG and the data
    position, under runs/<run_id>/checkpoints/step-<N>/. A stop (Ctrl+C, SIGTERM), running out of memory and too
    many NaN steps also write one."""

    every_n_steps: int = Field(500, ge=0, description="Write a checkpoint every N steps; 0 = never by step count "
                               "(a stop or the end still writes one).")
    every_n_epochs: int | None = Field(None, ge=1, description="Write a checkpoint at the end of every N-th epoch.")
    keep_last: int = Field(2, ge=1, description="Checkpoints kept; older ones are deleted once a newer one is "
                           "complete (the LoRA files of output.save_every_n_steps are never deleted).")
    at_end: bool = Field(True, description="Also write a checkpoint when the run finishes, so that it can be "
                         "continued later with more epochs or steps.")


class FaultsSection(Section):
    """Testing aid: make a run fail on purpose at a given step (steps count from 1, over the whole run), to check
    what a real failure does. Leave unset in real runs."""

    oom_at_step: int | None = Field(None, ge=1, description="Raise a real torch out-of-memory error in this step's "
                                    "forward pass.")
    oom_attempts: int = Field(1, ge=1, le=2, description="How many tries of that step fail: 1 = the first (the "
                              "split retry succeeds), 2 = the retry too (the run saves and exits with status 5).")
    oom_min_batch: int | None = Field(None, ge=2, description="Only while train.train_batch_size is at least "
                                      "this (a lighter retry with a smaller batch then succeeds, as on a real GPU).")
    nan_at_step: int | None = Field(None, ge=1, description="Make this step's loss NaN.")
    nan_steps: int = Field(1, ge=1, description="Steps in a row, from nan_at_step, whose loss is NaN.")
    kill_at_step: int | None = Field(None, ge=1, description="Send this process SIGKILL in this step, after its "
                                     "backward pass and before the update (as a power cut would).")
    kill_in_checkpoint: int | None = Field(None, ge=1, description="Send this process SIGKILL while it writes the "
                                           "checkpoint of this step, after the first file.")


class LorakitConfig(Section):
    """A whole lorakit run."""

    version: int = Field(
        CONFIG_VERSION, ge=1, le=CONFIG_VERSION, description="Config file format version (older files are migrated)."
    )
    model: ModelSection = Field(default_factory=ModelSection)
    network: NetworkSection = Field(default_factory=NetworkSection)
    data: DataSection = Field(default_factory=DataSection)
    train: TrainSection = Field(default_factory=TrainSection)
    output: OutputSection = Field(default_factory=OutputSection)
    sample: SampleSection = Field(default_factory=SampleSection)
    mode: ModeSection = Field(
        default_factory=LoraModeSection,
        description="The training strategy: [mode] type = lora, dreambooth, ileco or difference, with that "
        "mode's settings (a setting of another mode is an error).",
    )
    checkpoint: CheckpointSection = Field(default_factory=CheckpointSection)
    faults: FaultsSection = Field(default_factory=FaultsSection)
    bench: BenchSection = Field(default_factory=BenchSection)
    batch: BatchSection = Field(default_factory=BatchSection)
    storage: StorageSection = Field(default_factory=StorageSection)

    @field_validator("mode", mode="before")
    @classmethod
    def _mode_type_default(cls, value: Any) -> Any:
        """A [mode] table without `type` is plain lora (the default mode)."""
        if isinstance(value, dict) and "type" not in value:
            return {"type": "lora", **value}
        return value

    @model_validator(mode="after")
    def _some_learning_rate(self) -> "LorakitConfig":
        te_lr = self.train.text_encoder_lr if self.train.text_encoder_lr is not None else self.train.learning_rate
        if self.train.learning_rate == 0 and (not self.network.train_text_encoder or te_lr == 0):
            raise ValueError("every learning rate is 0: nothing would train; set train.learning_rate")
        return self
