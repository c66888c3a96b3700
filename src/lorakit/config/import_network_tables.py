"""The facts `config.import_networks` maps by: kohya_ss GUI LoRA types, sd-scripts and LyCORIS network arguments
and presets, and why lorakit cannot reproduce some of them (read from those tools' code, not copied)."""

from __future__ import annotations

TRANSFORMER = ["proj_in", "to_q", "to_k", "to_v", "to_out.0", "ff.net.0.proj", "ff.net.2", "proj_out"]
ATTENTION = ["to_q", "to_k", "to_v", "to_out.0"]
TE_ATTENTION = ["q_proj", "k_proj", "v_proj", "out_proj"]
# LyCORIS preset → (3×3 convolutions on, UNet suffixes (None: the network type's set), text-encoder suffixes,
# text encoder trained (None: as the rest of the config says))
PRESETS: dict[str, tuple[bool, list[str] | None, list[str] | None, bool | None]] = {
    "full": (True, None, None, None),
    "attn-mlp": (False, TRANSFORMER, None, None),
    "attn-only": (False, ATTENTION, TE_ATTENTION, None),
    "unet-only": (True, None, None, False),
    "unet-transformer-only": (False, TRANSFORMER, None, False),
}
PRESET_REASONS = {
    "full-lin": "LyCORIS 'full-lin' adapts the resnets' Linear layers without their convolutions; lorakit's "
    "module sets cannot express it",
    "unet-convblock-only": "lorakit cannot train only the resnets and samplers (with conv_in/conv_out)",
    "ia3": "the ia3 preset goes with LyCORIS (IA)³, which lorakit does not train",
}
EXTRA_FULL = ("LyCORIS preset '{preset}' on SD1/SD2 also trains conv_in, conv_out and time_embedding.linear_1/2; "
              "lorakit's {kind} set leaves them out (sd-scripts drops them when it loads the file); on SDXL the "
              "sets are the same")
ALGOS = {"lora": "locon", "locon": "locon", "loha": "loha", "lokr": "lokr"}
ALGO_REASONS = {
    "ia3": "(IA)³ scales activations instead of adding a low-rank update; lorakit does not train it",
    "dylora": "DyLoRA (ranks trained in random order) is not supported",
    "glora": "GLoRA is not supported",
    "boft": "BOFT (orthogonal fine-tuning) is not supported",
    "diag-oft": "Diag-OFT (orthogonal fine-tuning) is not supported",
    "full": "native fine-tuning (LyCORIS algo=full) trains whole weights, not an adapter; not supported",
}
MODULE_REASONS = {
    "networks.dylora": "DyLoRA (networks.dylora) is not supported",
    "networks.lora_fa": "LoRA-FA (networks.lora_fa, frozen down matrices) is not supported",
    "networks.oft": "OFT (networks.oft) is not supported",
    "networks.loha": "sd-scripts' own networks.loha (SDXL/Anima, conv only with conv_dim) is not mapped; "
    "use network_module = 'loha' (LyCORIS's module set)",
    "networks.lokr": "sd-scripts' own networks.lokr (SDXL/Anima, conv only with conv_dim) is not mapped; "
    "use network_module = 'lokr' (LyCORIS's module set)",
}
OTHER_FAMILY = "trains another model family (Flux, SD3, HunyuanImage, Anima, Lumina); lorakit trains SD1/SD2/SDXL"
GUI_LYCORIS = {"LoCon": "locon", "LyCORIS/LoCon": "locon", "LyCORIS/LoHa": "loha", "LyCORIS/LoKr": "lokr",
               "LyCORIS/iA3": "ia3", "LyCORIS/DyLoRA": "dylora", "LyCORIS/GLoRA": "glora", "LyCORIS/BOFT": "boft",
               "LyCORIS/Diag-OFT": "diag-oft", "LyCORIS/Native Fine-Tuning": "full"}
GUI_MODULES = {"Standard": "networks.lora", "Kohya LoCon": "networks.lora", "Kohya DyLoRA": "networks.dylora",
               "LoRA-FA": "networks.lora_fa", "Kohya LoHa": "networks.loha", "Kohya LoKr": "networks.lokr"}
# the GUI keys kohya_ss writes into network_args for LyCORIS LoCon/LoHa (every one, whatever its value)
_LYCORIS_GUI_ARGS = {"LyCORIS_preset": "preset", "conv_dim": "conv_dim", "conv_alpha": "conv_alpha",
                     "use_tucker": "use_tucker", "rank_dropout": "rank_dropout", "bypass_mode": "bypass_mode",
                     "dora_wd": "dora_wd", "module_dropout": "module_dropout", "use_scalar": "use_scalar",
                     "rank_dropout_scale": "rank_dropout_scale", "train_norm": "train_norm"}
GUI_LYCORIS_ARGS = {"locon": _LYCORIS_GUI_ARGS, "loha": _LYCORIS_GUI_ARGS,
                    "lokr": {**_LYCORIS_GUI_ARGS, "factor": "factor", "use_cp": "use_cp",
                             "decompose_both": "decompose_both"}}
# the GUI keys kohya_ss writes for Standard / Kohya LoCon when they are set (truthy)
GUI_KOHYA_ARGS = ("down_lr_weight", "mid_lr_weight", "up_lr_weight", "block_lr_zero_threshold", "block_dims",
                  "block_alphas", "conv_block_dims", "conv_block_alphas", "rank_dropout", "module_dropout")
LORAPLUS = ("loraplus_lr_ratio", "loraplus_unet_lr_ratio", "loraplus_text_encoder_lr_ratio")
GUI_KEYS = {"conv_dim", "conv_alpha", "factor", "dora_wd", "LyCORIS_preset", "use_tucker", "use_cp", "use_scalar",
            "rank_dropout", "module_dropout", "train_norm", "bypass_mode", "rank_dropout_scale", "constrain",
            "rescaled", "decompose_both", "unit", "train_on_input", *GUI_KOHYA_ARGS, *LORAPLUS}
NETWORK_KEYS = GUI_KEYS | {"LoRA_type", "network_module", "network_args", "network_dim", "network_alpha",
                           "network_dropout"}
MAX_DIM = 1024  # lorakit's largest rank (NetworkSection.network_dim)
# layer widths of SD1/SD2/SDXL (channels, skip concatenations, GEGLU and MLP widths, text contexts)
WIDTHS = (320, 640, 768, 960, 1024, 1280, 1920, 2048, 2560, 3072, 4096, 5120, 10240)
UNSUPPORTED_ARGS = {
    "down_lr_weight": "per-block learning-rate weights are not supported",
    "mid_lr_weight": "per-block learning-rate weights are not supported",
    "up_lr_weight": "per-block learning-rate weights are not supported",
    "block_lr_zero_threshold": "per-block learning-rate weights are not supported",
    "loraplus_lr_ratio": "LoRA+ learning-rate ratios are not supported",
    "loraplus_unet_lr_ratio": "LoRA+ learning-rate ratios are not supported",
    "loraplus_text_encoder_lr_ratio": "LoRA+ learning-rate ratios are not supported",
    "use_tucker": "Tucker decomposition of the 3×3 convolutions is not supported",
    "use_scalar": "LyCORIS's trained scalar is not supported",
    "train_norm": "training the normalisation layers is not supported",
    "decompose_both": "lorakit's LoKr does not decompose both Kronecker halves",
    "full_matrix": "lorakit's LoKr has no forced full-matrix mode",
    "rs_lora": "rank-stabilised scaling (alpha/√r) is not supported",
    "unbalanced_factorization": "unbalanced LoKr factorisation is not supported",
    "constraint": "OFT constraint: OFT is not supported",
    "rescaled": "OFT rescaling: OFT is not supported",
    "train_on_input": "(IA)³ option: (IA)³ is not supported",
    "block_size": "DyLoRA block size: DyLoRA is not supported",
    "wd_on_output": "lorakit's DoRA normalises per output channel (LyCORIS wd_on_output = True)",
}
LYCORIS_ALIASES = {"use_cp": "use_tucker", "use_conv_cp": "use_tucker", "disable_conv_cp": "use_tucker",
                   "constrain": "constraint"}
INERT_ARGS = {"bypass_mode": "lorakit always adds the adapter's output beside the frozen layer, as bypass mode "
              "does", "rank_dropout_scale": "LyCORIS's create_network does not pass it on to its modules",
              "train_t5xxl": "no T5 in SD1/SD2/SDXL"}
# rank/module dropout: sd-scripts networks/lora.py LoRAModule.forward is lorakit's network.rank_dropout /
# module_dropout; LyCORIS (lycoris/modules/*.py, `rank_dropout_scale` never set by lycoris/kohya.py) differs by algo
DROPOUT_ARGS = ("rank_dropout", "module_dropout")
LYCORIS_RANK_DROPOUT = {
    "lora": "LyCORIS's LoCon drops whole output rows of ΔW (in bypass_mode: ranks) for the whole batch, unscaled; "
    "lorakit's rank_dropout is sd-scripts networks.lora's (ranks per sample, the kept ones × 1/(1 − p)); set "
    "network.rank_dropout by hand for that",
    "loha": "peft's LoHa rescales the kept rows of ΔW by 1/(kept fraction); LyCORIS's LoHa does not",
}
LYCORIS_NEURON_DROPOUT = {
    False: "LyCORIS applies no neuron dropout outside bypass_mode (LoCon's rebuilt weight skips it, LoHa/LoKr "
    "have none)",
    True: "LyCORIS's bypass_mode drops elements of the module's output; lorakit drops the down projection's output "
    "(kohya) or the adapter's input (peft)",
}
