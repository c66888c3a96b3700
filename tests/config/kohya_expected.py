"""What sd-scripts would train for each real kohya config in ../shared/testdata/kohya-configs/ (read by
tests/config/test_kohya_configs.py), written from kohya's code, not from lorakit's output.

GUI JSON (kohya_ss 45088f04): `open_configuration` keeps the GUI widget value for a key the JSON lacks (e.g.
max_train_steps 1600, max_resolution "512,512", max_bucket_reso 2048, bucket_no_upscale True, lr_warmup 10,
optimizer "AdamW" via common_gui.update_my_data), and `update_my_data` turns "" into 0 (max_train_steps,
max_train_epochs, seed), 1 (lr_scheduler_num_cycles) or 1.0 (lr_scheduler_power). `lora_gui.train_model` then
builds config_toml_data: max_train_steps 0 without dataset_config = ceil(Σ repeats×images / batch / accumulation ×
epoch × reg_factor); lr_warmup % → a fraction (common_gui.resolve_lr_warmup_steps) or, with dataset_config and
steps, round(% × steps / 100) steps; text_encoder_lr 0 + unet_lr ≠ 0 → network_train_unet_only
(resolve_network_train_flags); noise_offset / adaptive_noise_scale only with noise_offset_type "Original",
multires only with "Multires"; every value in ["", False, None] is dropped (so 0 too: max_grad_norm 0 reaches
sd-scripts as its default 1.0, caption_extension "" as ".caption", seed 0 as a random seed).
`additional_parameters` follow on the command line and override the config file (train_util.read_config_from_file
parses the command line into the config's namespace).

sd-scripts (48d368fa): argparse defaults for absent keys (train_util.py, train_network.py): learning_rate 2e-6,
max_train_steps 1600, lr_scheduler constant, optimizer AdamW, network_alpha 1, network_dim None → 4
(networks/lora.py create_network; conv_alpha 1 when conv_dim is given), enable_bucket off, min/max_bucket_reso
256/1024, bucket_reso_steps 64, caption_extension ".caption", max_grad_norm 1.0, save_precision None (= float).
max_train_epochs wins over max_train_steps: epochs × ceil(len(dataloader) / accumulation) (train_network.py);
lr_warmup_steps < 1 (a float) is a ratio of the total (train_util.get_scheduler_fix); Adafactor without
relative_step=False uses relative steps and its own adafactor scheduler (train_util.get_optimizer);
lr_scheduler_type replaces lr_scheduler (get_scheduler_fix). A dataset TOML's values win over the main file's, and
regularisation images are repeated until they match the training images (DreamBoothDataset).

The synthetic layout the test builds for every run: <tmp>/img/10_subject with 3 images (30 samples per epoch), and
<tmp>/reg/1_class with 5 images when the config names a reg_data_dir (filled to 30: 60 per epoch); a dataset TOML's
subsets get 3 images each (5 for a reg subset) with their own num_repeats. All images are 512×512 (one bucket),
so batches per epoch = ceil(samples / batch_size).

Columns: lorakit config paths, plus plan.total_steps / plan.warmup_steps (`lorakit plan`), data.size ((w, h) from
data.image_size or data.resolution), network.scale (alpha / dim), train.text_encoder_lr* (the text encoder's
effective lr) and train.lr_scheduler_args* (as a dict). A column absent from a row takes SD_SCRIPTS_DEFAULTS; a
row without some column (clip_skip for SDXL, learning rates under Adafactor's relative step, the lr_scheduler
when lr_scheduler_type replaces it, bucket settings with buckets off) is not compared.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Row:
    """What sd-scripts runs for one config file."""

    family: str  # the built-in tiny model the test substitutes: tiny-sd1, tiny-sd2-v or tiny-sdxl
    dataset_toml: str | None  # its pair, passed with --dataset-toml
    reg: bool = False  # the config names a reg_data_dir
    unsupported: list[str] = field(default_factory=list)  # keys the import report must list as unsupported
    steps_why: str = ""
    warmup_why: str = "train_util.get_scheduler_fix: lr_warmup_steps 0"
    columns: dict[str, Any] = field(default_factory=dict)
    # columns where lorakit knowingly differs from kohya: column → the source key the import must report as
    # unsupported (the column is then not compared; the kohya value stays in `columns` as the record)
    gaps: dict[str, str] = field(default_factory=dict)


# sd-scripts' values when a config does not set them (see the module docstring); compared on every row.
SD_SCRIPTS_DEFAULTS: dict[str, Any] = {
    "network.train_text_encoder": True, "train.optimizer_type": "AdamW", "train.optimizer_args": {},
    "plan.warmup_steps": 0, "train.train_batch_size": 1, "train.gradient_accumulation_steps": 1,
    "data.layout": "kohya", "data.enable_bucket": False, "train.mixed_precision": "no", "output.save_precision": "fp32",
    "train.lora_precision": "fp32", "train.noise_offset": 0.0, "train.adaptive_noise_scale": None,
    "train.multires_noise_iterations": None, "train.ip_noise_gamma": None, "train.min_timestep": 0,
    "train.max_timestep": 1000, "train.min_snr_gamma": None, "train.zero_terminal_snr": False,
    "train.debiased_estimation_loss": False, "train.v_pred_like_loss": None,
    "train.scale_v_pred_loss_like_noise_pred": False, "output.save_every_n_epochs": None,
    "output.save_every_n_steps": None, "output.save_last_n_epochs": None, "output.save_last_n_steps": None,
    "train.max_token_length": 75, "data.caption_extension": ".caption", "data.shuffle_caption": False,
    "data.keep_tokens": 0, "data.keep_tokens_separator": "", "data.secondary_separator": None, "data.flip_aug": False,
    "data.color_aug": False, "data.random_crop": False, "train.max_grad_norm": 1.0, "train.scale_weight_norms": None,
    "train.masked_loss": False,
}

# Where in kohya's code each column comes from (the failure message quotes it).
WHY: dict[str, str] = {
    "network.network_module": "train_network.py network_module (networks.lora + conv_dim = LoCon; lycoris.kohya algo)",
    "network.network_dim": "train_network.py --network_dim (None → 4 in networks/lora.py create_network)",
    "network.network_alpha": "train_network.py --network_alpha (default 1)",
    "network.conv_dim": "network_args conv_dim (lora_gui.train_model passes it for LoCon/LyCORIS types)",
    "network.conv_alpha": "network_args conv_alpha (networks/lora.py create_network: default 1)",
    "network.use_dora": "lycoris.kohya network_args dora_wd",
    "network.lokr_factor": "lycoris.kohya network_args factor",
    "network.scale": "LyCORIS LoKr: a dim above every layer keeps both Kronecker halves full, at scale 1",
    "network.network_dropout": "train_network.py --network_dropout (networks/lora.py LoRAModule.forward: dropout on "
                               "lora_down's output)",
    "network.dropout_placement": "networks/lora.py LoRAModule.forward drops lora_down's output (lorakit 'kohya')",
    "network.rank_dropout": "network_args rank_dropout (networks/lora.py create_network, LoRAModule.forward)",
    "network.module_dropout": "network_args module_dropout (networks/lora.py create_network, LoRAModule.forward)",
    "network.train_text_encoder": "train_network.py: the TE is trained unless network_train_unet_only "
                                  "(GUI: lora_gui.resolve_network_train_flags, or additional_parameters)",
    "train.optimizer_type": "train_util.get_optimizer (default AdamW)",
    "train.optimizer_args": "train_util.get_optimizer: k=v with ast.literal_eval; Adafactor relative_step default True",
    "train.learning_rate": "networks/lora.py prepare_optimizer_params: unet_lr, else learning_rate",
    "train.text_encoder_lr*": "networks/lora.py prepare_optimizer_params: text_encoder_lr[0], else learning_rate",
    "train.lr_scheduler": "train_util.get_scheduler_fix (Adafactor relative_step: get_optimizer sets adafactor)",
    "train.lr_scheduler_type": "train_util.get_scheduler_fix: lr_scheduler_type replaces lr_scheduler",
    "train.lr_scheduler_args*": "train_util.get_scheduler_fix: k=v with ast.literal_eval",
    "train.lr_scheduler_num_cycles": "train_util --lr_scheduler_num_cycles (GUI: update_my_data turns '' into 1)",
    "train.multires_noise_discount": "train_util --multires_noise_discount (default 0.3)",
    "train.seed": "train_util --seed (None = random: then not compared)",
    "train.clip_skip": "train_util --clip_skip (None = the last layer; SDXL ignores it)",
    "data.size": "train_util: resolution 'W,H' (one value = square); a dataset TOML's resolution wins",
    "data.bucket_mode": "sd-scripts' BucketManager shapes (lorakit's bucket_mode 'kohya')",
    "data.layout": "every import reads folders as sd-scripts does (data.layout 'kohya')",
    "model.v_parameterization": "train_util --v_parameterization",
}

# bucket_reso_steps 1 with buckets on: sd-scripts refuses to start (train_network.py assert_extra_args →
# DatasetGroup.verify_bucket_reso_steps(64); sdxl_train_network.py: 32), so those rows expect the key to be reported
# unsupported rather than a value.
ROWS: dict[str, Row] = {
    'CyberLoRA_kohya_config.json': Row(
        'sdxl', None, reg=False, unsupported=[],
        steps_why='train_network.py: max_train_epochs wins: 8 * ceil(ceil(30 / 1) / 1) = 240',
        columns={'network.network_module': 'lora', 'network.network_dim': 32, 'network.network_alpha': 16.0,
            'train.optimizer_type': 'AdamW8bit', 'train.learning_rate': 0.0001, 'train.text_encoder_lr*': 5e-05,
            'train.lr_scheduler': 'cosine', 'plan.total_steps': 240, 'data.size': [1024, 1024], 'data.enable_bucket':
            True, 'data.bucket_mode': 'kohya', 'data.min_bucket_reso': 512, 'data.max_bucket_reso': 1536,
            'data.bucket_reso_steps': 64, 'data.bucket_no_upscale': False, 'train.mixed_precision': 'fp16',
            'output.save_precision': 'fp16', 'train.noise_offset': 0.1, 'output.save_every_n_epochs': 1,
            'data.keep_tokens': 1, 'train.seed': 42}),
    'DerJimno_lora-sdxl-reg.json': Row(
        'sdxl', None, reg=True, unsupported=[],
        steps_why='lora_gui.train_model: ceil(3*10 / 3 / 1 * 6 * 2) = 120',
        columns={'network.network_module': 'lora', 'network.network_dim': 32, 'network.network_alpha': 16.0,
            'train.optimizer_type': 'Adafactor', 'train.optimizer_args': {'scale_parameter': False, 'relative_step':
            False, 'warmup_init': False}, 'train.learning_rate': 0.0003, 'train.text_encoder_lr*': 0.0003,
            'train.lr_scheduler': 'constant', 'plan.total_steps': 120, 'train.train_batch_size': 3, 'data.size': [1024,
            1024], 'data.enable_bucket': True, 'data.bucket_mode': 'kohya', 'data.min_bucket_reso': 256,
            'data.max_bucket_reso': 2048, 'data.bucket_reso_steps': 64, 'data.bucket_no_upscale': True,
            'train.mixed_precision': 'bf16', 'output.save_precision': 'bf16', 'output.save_every_n_epochs': 1,
            'data.caption_extension': '.txt'}),
    'OffLive_setting.toml': Row(
        'sd1', 'OffLive_dataset_config_man.toml', reg=False, unsupported=[],
        steps_why='max_train_steps as given',
        columns={'network.network_module': 'lora', 'network.network_dim': 8, 'network.network_alpha': 1.0,
            'train.optimizer_type': 'AdamW8bit', 'train.learning_rate': 5e-05, 'train.text_encoder_lr*': 2.5e-05,
            'train.lr_scheduler': 'cosine', 'plan.total_steps': 3000, 'data.size': [512, 512], 'data.enable_bucket':
            True, 'data.bucket_mode': 'kohya', 'data.min_bucket_reso': 256, 'data.max_bucket_reso': 1024,
            'data.bucket_reso_steps': 64, 'data.bucket_no_upscale': False, 'train.mixed_precision': 'fp16',
            'output.save_precision': 'fp16', 'output.save_every_n_epochs': 1, 'output.save_every_n_steps': 200,
            'train.clip_skip': 1, 'train.seed': 0}),
    'akegarasu_default.toml': Row(
        'sd1', None, reg=False, unsupported=[],
        steps_why='train_network.py: max_train_epochs wins: 10 * ceil(ceil(30 / 1) / 1) = 300',
        columns={'network.network_module': 'lora', 'network.network_dim': 32, 'network.network_alpha': 16.0,
            'train.optimizer_type': 'AdamW8bit', 'train.learning_rate': 0.0001, 'train.text_encoder_lr*': 1e-05,
            'train.lr_scheduler': 'cosine_with_restarts', 'train.lr_scheduler_num_cycles': 1, 'plan.total_steps': 300,
            'data.size': [512, 512], 'data.enable_bucket': True, 'data.bucket_mode': 'kohya', 'data.min_bucket_reso':
            256, 'data.max_bucket_reso': 1024, 'data.bucket_reso_steps': 64, 'data.bucket_no_upscale': False,
            'train.mixed_precision': 'fp16', 'output.save_precision': 'fp16', 'output.save_every_n_epochs': 1,
            'output.save_last_n_epochs': 499, 'train.clip_skip': 2, 'train.max_token_length': 225,
            'data.caption_extension': '.txt', 'data.shuffle_caption': True, 'train.seed': 1337}),
    'akegarasu_lora.toml': Row(
        'sd1', None, reg=False, unsupported=[],
        steps_why='train_network.py: max_train_epochs wins: 10 * ceil(ceil(30 / 1) / 1) = 300',
        columns={'network.network_module': 'lora', 'network.network_dim': 32, 'network.network_alpha': 16.0,
            'train.optimizer_type': 'AdamW8bit', 'train.learning_rate': 0.0001, 'train.text_encoder_lr*': 1e-05,
            'train.lr_scheduler': 'cosine_with_restarts', 'train.lr_scheduler_num_cycles': 1, 'plan.total_steps': 300,
            'data.size': [512, 512], 'data.enable_bucket': True, 'data.bucket_mode': 'kohya', 'data.min_bucket_reso':
            256, 'data.max_bucket_reso': 1024, 'data.bucket_reso_steps': 64, 'data.bucket_no_upscale': False,
            'train.mixed_precision': 'fp16', 'output.save_precision': 'fp16', 'output.save_every_n_epochs': 1,
            'train.clip_skip': 2, 'train.max_token_length': 225, 'data.caption_extension': '.txt',
            'data.shuffle_caption': True, 'train.seed': 1337}),
    'cybermeow_loha_config.toml': Row(
        'sd1', None, reg=False, unsupported=[],
        steps_why='train_network.py: max_train_epochs wins: 2 * ceil(ceil(30 / 8) / 1) = 8',
        columns={'network.network_module': 'loha', 'network.use_dora': False, 'network.network_dim': 8,
            'network.network_alpha': 4.0, 'train.optimizer_type': 'AdamW8bit', 'train.optimizer_args': {'weight_decay':
            0.1, 'betas': (0.9, 0.99)}, 'train.learning_rate': 0.0002, 'train.text_encoder_lr*': 0.0002,
            'train.lr_scheduler': 'constant', 'plan.total_steps': 8, 'train.train_batch_size': 8, 'data.size': [512,
            512], 'data.enable_bucket': True, 'data.bucket_mode': 'kohya', 'data.min_bucket_reso': 320,
            'data.max_bucket_reso': 960, 'data.bucket_reso_steps': 64, 'data.bucket_no_upscale': False,
            'train.mixed_precision': 'bf16', 'output.save_precision': 'fp16', 'train.multires_noise_iterations': 10,
            'train.multires_noise_discount': 0.3, 'train.min_snr_gamma': 5.0, 'output.save_every_n_epochs': 10,
            'output.save_every_n_steps': 5000, 'train.clip_skip': 2, 'train.max_token_length': 150,
            'data.caption_extension': '.txt', 'train.seed': 23}),
    'cybermeow_lokr_config.toml': Row(
        'sd1', None, reg=False, unsupported=[],
        steps_why='train_network.py: max_train_epochs wins: 2 * ceil(ceil(30 / 8) / 1) = 8',
        columns={'network.network_module': 'lokr', 'network.lokr_factor': 6, 'network.use_dora': False, 'network.scale':
            1.0, 'train.optimizer_type': 'AdamW8bit', 'train.optimizer_args': {'weight_decay': 0.1, 'betas': (0.9,
            0.99)}, 'train.learning_rate': 0.0002, 'train.text_encoder_lr*': 0.0002, 'train.lr_scheduler': 'constant',
            'plan.total_steps': 8, 'train.train_batch_size': 8, 'data.size': [512, 512], 'data.enable_bucket': True,
            'data.bucket_mode': 'kohya', 'data.min_bucket_reso': 320, 'data.max_bucket_reso': 960,
            'data.bucket_reso_steps': 64, 'data.bucket_no_upscale': False, 'train.mixed_precision': 'bf16',
            'output.save_precision': 'fp16', 'train.multires_noise_iterations': 10, 'train.multires_noise_discount':
            0.3, 'train.min_snr_gamma': 5.0, 'output.save_every_n_epochs': 10, 'output.save_every_n_steps': 5000,
            'train.clip_skip': 2, 'train.max_token_length': 150, 'data.caption_extension': '.txt', 'train.seed': 23}),
    'cybermeow_lycoris_full_config.toml': Row(
        'sd1', None, reg=False, unsupported=['network_args'],
        steps_why='train_network.py: max_train_epochs wins: 2 * ceil(ceil(30 / 8) / 1) = 8',
        columns={'train.optimizer_type': 'AdamW8bit', 'train.optimizer_args': {'weight_decay': 0.1,
            'betas': (0.9, 0.99)},
            'train.learning_rate': 2e-06, 'train.text_encoder_lr*': 2e-06, 'train.lr_scheduler': 'constant',
            'plan.total_steps': 8, 'train.train_batch_size': 8, 'data.size': [512, 512], 'data.enable_bucket': True,
            'data.bucket_mode': 'kohya', 'data.min_bucket_reso': 320, 'data.max_bucket_reso': 960,
            'data.bucket_reso_steps': 64, 'data.bucket_no_upscale': False, 'train.mixed_precision': 'bf16',
            'output.save_precision': 'fp16', 'train.multires_noise_iterations': 10, 'train.multires_noise_discount':
            0.3, 'train.min_snr_gamma': 5.0, 'output.save_every_n_epochs': 10, 'output.save_every_n_steps': 5000,
            'train.clip_skip': 2, 'train.max_token_length': 150, 'data.caption_extension': '.txt', 'train.seed': 23}),
    'headshots_train_config.json': Row(
        'sdxl', 'headshots_dataset_config.toml', reg=False, unsupported=[],
        steps_why='max_train_steps as given',
        warmup_why='train_util.get_scheduler_fix: lr_warmup_steps 124',
        columns={'network.network_module': 'lora', 'network.network_dim': 32, 'network.network_alpha': 32.0,
            'train.optimizer_type': 'AdamW8bit', 'train.learning_rate': 0.0001, 'train.text_encoder_lr*': 0.0001,
            'train.lr_scheduler': 'cosine', 'plan.total_steps': 1240, 'plan.warmup_steps': 124, 'data.size': [1024,
            1024], 'train.mixed_precision': 'fp16', 'output.save_precision': 'fp16', 'output.save_every_n_epochs': 1,
            'output.save_every_n_steps': 10, 'output.save_last_n_steps': 1, 'data.caption_extension': '.txt',
            'data.shuffle_caption': True, 'data.keep_tokens': 1, 'train.masked_loss': True}),
    'kingaigfcash_kohya_config.json': Row(
        'sdxl', None, reg=False, unsupported=[],
        steps_why='lora_gui.train_model: ceil(3*10 / 1 / 1 * 10 * 1) = 300',
        columns={'network.network_module': 'lora', 'network.network_dim': 256, 'network.network_alpha': 1.0,
            'train.optimizer_type': 'Adafactor', 'train.optimizer_args': {'scale_parameter': False, 'relative_step':
            False, 'warmup_init': False}, 'train.learning_rate': 4e-05, 'train.text_encoder_lr*': 4e-05,
            'train.lr_scheduler': 'constant', 'plan.total_steps': 300, 'data.size': [1024, 1024], 'data.enable_bucket':
            True, 'data.bucket_mode': 'kohya', 'data.min_bucket_reso': 256, 'data.max_bucket_reso': 2048,
            'data.bucket_reso_steps': 64, 'data.bucket_no_upscale': False, 'train.mixed_precision': 'fp16',
            'output.save_precision': 'bf16', 'train.min_snr_gamma': 5.0, 'output.save_every_n_epochs': 1,
            'data.caption_extension': '.txt'}),
    'kss_SDXL-1image-LoKr-prodigy.json': Row(
        'sdxl', None, reg=False, unsupported=[],
        steps_why='max_train_steps as given',
        columns={'network.network_module': 'lokr', 'network.lokr_factor': 6, 'network.use_dora': False, 'network.scale':
            1.0, 'train.optimizer_type': 'Prodigy', 'train.optimizer_args': {'d0': 1e-05, 'd_coef': 1.0, 'weight_decay':
            0.4, 'decouple': True, 'safeguard_warmup': True, 'use_bias_correction': True}, 'train.learning_rate': 1.0,
            'train.text_encoder_lr*': 1.0, 'train.lr_scheduler_type': 'CosineAnnealingLR', 'train.lr_scheduler_args*':
            {'T_max': 1000, 'eta_min': 0.0}, 'plan.total_steps': 160, 'data.size': [1024, 1024], 'data.enable_bucket':
            True, 'data.bucket_mode': 'kohya', 'data.min_bucket_reso': 256, 'data.max_bucket_reso': 2048,
            'data.bucket_reso_steps': 32, 'data.bucket_no_upscale': False, 'train.mixed_precision': 'bf16',
            'output.save_precision': 'bf16', 'train.multires_noise_iterations': 5, 'train.multires_noise_discount': 0.1,
            'train.min_snr_gamma': 5.0, 'train.debiased_estimation_loss': True, 'output.save_every_n_epochs': 10,
            'data.caption_extension': '.txt', 'data.shuffle_caption': True, 'train.seed': 12345}),
    'kss_SDXL-AI_Now-AdamW.json': Row(
        'sdxl', None, reg=False, unsupported=[],
        steps_why='max_train_steps as given',
        columns={'network.network_module': 'lora', 'network.network_dim': 32, 'network.network_alpha': 32.0,
            'train.learning_rate': 0.0001, 'train.text_encoder_lr*': 0.0001, 'train.lr_scheduler': 'constant',
            'plan.total_steps': 320, 'train.train_batch_size': 4, 'data.size': [1024, 1024], 'data.enable_bucket': True,
            'data.bucket_mode': 'kohya', 'data.min_bucket_reso': 256, 'data.max_bucket_reso': 2048,
            'data.bucket_reso_steps': 64, 'data.bucket_no_upscale': True, 'train.mixed_precision': 'bf16',
            'output.save_precision': 'bf16', 'train.noise_offset': 0.0375, 'train.adaptive_noise_scale': 0.00375,
            'train.min_timestep': 100, 'train.max_timestep': 900, 'train.min_snr_gamma': 5.0,
            'output.save_every_n_epochs': 5, 'data.caption_extension': '.txt-no', 'train.seed': 12345}),
    'kss_SDXL-AI_Now-prodigy.json': Row(
        'sdxl', None, reg=False, unsupported=[],
        steps_why='max_train_steps as given',
        columns={'network.network_module': 'lora', 'network.network_dim': 32, 'network.network_alpha': 16.0,
            'train.optimizer_type': 'Prodigy', 'train.optimizer_args': {'weight_decay': 0.01, 'decouple': True, 'd0':
            0.0001, 'use_bias_correction': True}, 'train.learning_rate': 1.0, 'train.text_encoder_lr*': 1.0,
            'train.lr_scheduler': 'constant', 'plan.total_steps': 1600, 'train.train_batch_size': 8, 'data.size': [1024,
            1024], 'data.enable_bucket': True, 'data.bucket_mode': 'kohya', 'data.min_bucket_reso': 256,
            'data.max_bucket_reso': 2048, 'data.bucket_reso_steps': 32, 'data.bucket_no_upscale': True,
            'train.mixed_precision': 'bf16', 'output.save_precision': 'bf16', 'train.min_snr_gamma': 5.0,
            'output.save_every_n_epochs': 10, 'data.caption_extension': '.txt', 'train.scale_weight_norms': 5.0}),
    'kss_SDXL-LoHa-AI_Characters.json': Row(
        'sdxl', None, reg=False, unsupported=[],
        steps_why='train_network.py: max_train_epochs wins: 100 * ceil(ceil(30 / 8) / 1) = 400',
        columns={'network.network_module': 'loha', 'network.conv_dim': 16, 'network.conv_alpha': 16.0,
            'network.use_dora':
            False, 'network.network_dim': 32, 'network.network_alpha': 32.0, 'train.optimizer_type': 'AdamW8bit',
            'train.learning_rate': 0.001, 'train.text_encoder_lr*': 0.001, 'train.lr_scheduler': 'constant',
            'plan.total_steps': 400, 'train.train_batch_size': 8, 'data.size': [1024, 1024], 'data.enable_bucket': True,
            'data.bucket_mode': 'kohya', 'data.min_bucket_reso': 256, 'data.max_bucket_reso': 2048,
            'data.bucket_reso_steps': 32, 'data.bucket_no_upscale': False, 'train.mixed_precision': 'fp16',
            'output.save_precision': 'fp16', 'train.min_snr_gamma': 5.0, 'output.save_every_n_epochs': 100,
            'data.caption_extension': '.txt', 'train.scale_weight_norms': 2.5}),
    'kss_SDXL-adafactor.json': Row(
        'sdxl', None, reg=False, unsupported=[],
        steps_why='train_network.py: max_train_epochs wins: 30 * ceil(ceil(30 / 5) / 1) = 180',
        columns={'network.network_module': 'lora', 'network.network_dim': 128, 'network.network_alpha': 128.0,
            'train.optimizer_type': 'Adafactor', 'train.optimizer_args': {'relative_step': True}, 'train.lr_scheduler':
            'adafactor', 'plan.total_steps': 180, 'train.train_batch_size': 5, 'data.size': [1024, 1024],
            'data.enable_bucket': True, 'data.bucket_mode': 'kohya', 'data.min_bucket_reso': 64, 'data.max_bucket_reso':
            2048, 'data.bucket_reso_steps': 32, 'data.bucket_no_upscale': False, 'train.mixed_precision': 'bf16',
            'output.save_precision': 'bf16', 'train.noise_offset': 0.0357, 'train.adaptive_noise_scale': 0.00357,
            'output.save_every_n_epochs': 5, 'data.caption_extension': '.txt2', 'data.keep_tokens': 1,
            'train.scale_weight_norms': 1.0}),
    'kss_SDXL-aitrepreneur-clothing.json': Row(
        'sdxl', None, reg=False, unsupported=[],
        steps_why='lora_gui.train_model: ceil(3*10 / 1 / 2 * 15 * 1) = 225',
        columns={'network.network_module': 'lora', 'network.network_dim': 128, 'network.network_alpha': 1.0,
            'train.optimizer_type': 'Adafactor', 'train.optimizer_args': {'scale_parameter': False, 'relative_step':
            False, 'warmup_init': False}, 'train.learning_rate': 0.0009, 'train.text_encoder_lr*': 0.0009,
            'train.lr_scheduler': 'constant', 'plan.total_steps': 225, 'train.gradient_accumulation_steps': 2,
            'data.size': [1024, 1024], 'data.enable_bucket': True, 'data.bucket_mode': 'kohya', 'data.min_bucket_reso':
            256, 'data.max_bucket_reso': 2048, 'data.bucket_reso_steps': 64, 'data.bucket_no_upscale': True,
            'train.mixed_precision': 'bf16', 'output.save_precision': 'bf16', 'output.save_every_n_epochs': 1,
            'data.caption_extension': '.txt', 'train.seed': 12345}),
    'kss_SDXL-edgLoRAXL-AI_Now.json': Row(
        'sdxl', None, reg=False, unsupported=[],
        steps_why='max_train_steps as given',
        columns={'network.network_module': 'lora', 'network.network_dim': 32, 'network.network_alpha': 32.0,
            'train.optimizer_type': 'Prodigy', 'train.optimizer_args': {'decouple': True, 'weight_decay': 0.5, 'betas':
            (0.9, 0.99), 'use_bias_correction': False}, 'train.learning_rate': 1.0, 'train.text_encoder_lr*': 1.0,
            'train.lr_scheduler': 'cosine', 'plan.total_steps': 320, 'train.train_batch_size': 4, 'data.size': [1024,
            1024], 'data.enable_bucket': True, 'data.bucket_mode': 'kohya', 'data.min_bucket_reso': 256,
            'data.max_bucket_reso': 2048, 'data.bucket_reso_steps': 32, 'data.bucket_no_upscale': True,
            'train.mixed_precision': 'bf16', 'output.save_precision': 'bf16', 'train.noise_offset': 0.0357,
            'output.save_every_n_epochs': 10, 'data.caption_extension': '.txt', 'train.seed': 12345,
            'train.scale_weight_norms': 1.0}),
    'kss_SDXL-face-dogu_cat.json': Row(
        'sdxl', None, reg=False, unsupported=[],
        steps_why='lora_gui.train_model: ceil(3*10 / 1 / 1 * 10 * 1) = 300',
        columns={'network.network_module': 'lora', 'network.network_dim': 92, 'network.network_alpha': 46.0,
            'train.optimizer_type': 'AdamW8bit', 'train.learning_rate': 0.0001, 'train.text_encoder_lr*': 0.0001,
            'train.lr_scheduler': 'cosine', 'plan.total_steps': 300, 'data.size': [1024, 1024], 'data.enable_bucket':
            True, 'data.bucket_mode': 'kohya', 'data.min_bucket_reso': 64, 'data.max_bucket_reso': 2048,
            'data.bucket_reso_steps': 32, 'data.bucket_no_upscale': False, 'train.mixed_precision': 'bf16',
            'output.save_precision': 'bf16', 'train.noise_offset': 0.0357, 'train.adaptive_noise_scale': 0.00357,
            'output.save_every_n_epochs': 2, 'data.caption_extension': '.txt', 'data.keep_tokens': 1, 'train.seed':
            12345, 'train.scale_weight_norms': 1.0}),
    'kss_SDXL-kudou-reira-dadaptadam.json': Row(
        'sdxl', None, reg=False, unsupported=[],
        steps_why='max_train_steps as given',
        warmup_why='train_util.get_scheduler_fix: lr_warmup_steps 0.05 × total (float = ratio)',
        columns={'network.network_module': 'lora', 'network.network_dim': 64, 'network.network_alpha': 64.0,
            'network.train_text_encoder': False, 'train.optimizer_type': 'DAdaptAdam', 'train.optimizer_args':
            {'decouple': True, 'weight_decay': 0.1, 'betas': (0.9, 0.91)}, 'train.learning_rate': 1.0,
            'train.lr_scheduler': 'cosine', 'plan.total_steps': 1600, 'plan.warmup_steps': 80, 'train.train_batch_size':
            6, 'data.size': [1024, 1024], 'data.enable_bucket': True, 'data.bucket_mode': 'kohya',
            'data.min_bucket_reso': 256, 'data.max_bucket_reso': 2048, 'data.bucket_reso_steps': 64,
            'data.bucket_no_upscale': True, 'train.mixed_precision': 'bf16', 'output.save_precision': 'bf16',
            'train.noise_offset': 0.0357, 'train.min_snr_gamma': 5.0, 'output.save_every_n_epochs': 1,
            'train.max_token_length': 225, 'data.caption_extension': '.txt', 'data.shuffle_caption': True,
            'data.keep_tokens': 2, 'train.seed': 1337}),
    'kss_SDXL-kudou-reira-prodigy.json': Row(
        'sdxl', None, reg=False, unsupported=[],
        steps_why='max_train_steps as given',
        columns={'network.network_module': 'lora', 'network.network_dim': 256, 'network.network_alpha': 256.0,
            'network.train_text_encoder': False, 'train.optimizer_type': 'Prodigy', 'train.optimizer_args': {'decouple':
            True, 'weight_decay': 0.45, 'd_coef': 2, 'use_bias_correction': True, 'safeguard_warmup': True},
            'train.learning_rate': 1.0, 'train.lr_scheduler_type': 'CosineAnnealingLR', 'train.lr_scheduler_args*':
            {'T_max': 30}, 'plan.total_steps': 1600, 'train.train_batch_size': 6, 'data.size': [1024, 1024],
            'data.enable_bucket': True, 'data.bucket_mode': 'kohya', 'data.min_bucket_reso': 256,
            'data.max_bucket_reso': 2048, 'data.bucket_reso_steps': 64, 'data.bucket_no_upscale': True,
            'train.mixed_precision': 'bf16', 'output.save_precision': 'bf16', 'train.noise_offset': 0.0357,
            'train.min_snr_gamma': 5.0, 'output.save_every_n_epochs': 1, 'train.max_token_length': 225,
            'data.caption_extension': '.txt', 'data.shuffle_caption': True, 'data.keep_tokens': 2, 'train.seed': 1337}),
    'kss_SDXL-malcolmrey.json': Row(
        'sdxl', None, reg=False, unsupported=[],
        steps_why='train_network.py: max_train_epochs wins: 16 * ceil(ceil(30 / 8) / 1) = 64',
        columns={'network.network_module': 'lora', 'network.network_dim': 32, 'network.network_alpha': 13.0,
            'train.optimizer_type': 'AdamW8bit', 'train.learning_rate': 0.0001, 'train.text_encoder_lr*': 0.0001,
            'train.lr_scheduler': 'constant', 'plan.total_steps': 64, 'train.train_batch_size': 8, 'data.size': [1024,
            1024], 'data.enable_bucket': True, 'data.bucket_mode': 'kohya', 'data.min_bucket_reso': 256,
            'data.max_bucket_reso': 2048, 'data.bucket_reso_steps': 32, 'data.bucket_no_upscale': False,
            'train.mixed_precision': 'bf16', 'output.save_precision': 'bf16', 'train.min_snr_gamma': 5.0,
            'output.save_every_n_epochs': 2, 'data.caption_extension': '.txt', 'train.scale_weight_norms': 2.5}),
    'kss_iA3-Prodigy-sd15.json': Row(
        'sd1', None, reg=False, unsupported=['LoRA_type'],
        steps_why='max_train_steps as given',
        columns={'train.optimizer_type': 'Prodigy', 'train.optimizer_args': {'d_coef': 1.0, 'weight_decay': 0.01,
            'safeguard_warmup': False, 'use_bias_correction': False}, 'train.learning_rate': 1.0,
            'train.text_encoder_lr*': 1.0, 'train.lr_scheduler': 'constant', 'plan.total_steps': 1600, 'data.size':
            [512, 512], 'data.enable_bucket': True, 'data.bucket_mode': 'kohya', 'data.min_bucket_reso': 256,
            'data.max_bucket_reso': 2048, 'data.bucket_reso_steps': 64, 'data.bucket_no_upscale': True,
            'train.mixed_precision': 'fp16', 'output.save_precision': 'fp16', 'train.noise_offset': 0.05,
            'train.adaptive_noise_scale': 0.005, 'train.min_snr_gamma': 5.0, 'output.save_every_n_epochs': 10,
            'train.clip_skip': 1, 'data.caption_extension': '.txt', 'data.shuffle_caption': True, 'data.keep_tokens': 1,
            'train.seed': 31337, 'train.scale_weight_norms': 1.0}),
    'kss_locon-dadaptation-sdxl.json': Row(
        'sdxl', None, reg=False, unsupported=['bucket_reso_steps'],
        steps_why='max_train_steps as given',
        warmup_why='train_util.get_scheduler_fix: lr_warmup_steps 0.08 × total (float = ratio)',
        columns={'network.network_module': 'lora', 'network.network_dim': 64, 'network.network_alpha': 64.0,
            'network.train_text_encoder': False, 'train.optimizer_type': 'Adafactor', 'train.optimizer_args':
            {'scale_parameter': False, 'relative_step': False, 'warmup_init': False}, 'train.learning_rate': 4e-07,
            'train.lr_scheduler': 'constant_with_warmup', 'plan.total_steps': 1600, 'plan.warmup_steps': 128,
            'data.size': [512, 512], 'data.enable_bucket': True, 'data.bucket_mode': 'kohya', 'data.min_bucket_reso':
            256, 'data.max_bucket_reso': 2048, 'data.bucket_no_upscale': True,
            'train.mixed_precision': 'bf16', 'output.save_precision': 'fp16', 'train.noise_offset': 0.0357,
            'train.min_snr_gamma': 10.0, 'output.save_every_n_epochs': 1, 'data.caption_extension':
            '.none-use-foldername'}),
    'kss_loha-sd15.json': Row(
        'sd1', None, reg=False, unsupported=['bucket_reso_steps'],
        steps_why='max_train_steps as given',
        columns={'network.network_module': 'loha', 'network.conv_dim': 8, 'network.conv_alpha': 4.0, 'network.use_dora':
            False, 'network.network_dim': 32, 'network.network_alpha': 16.0, 'train.learning_rate': 0.0001,
            'train.text_encoder_lr*': 0.0001, 'train.lr_scheduler': 'cosine', 'plan.total_steps': 1600,
            'train.gradient_accumulation_steps': 4, 'data.size': [512, 512], 'data.enable_bucket': True,
            'data.bucket_mode': 'kohya', 'data.min_bucket_reso': 256, 'data.max_bucket_reso': 2048,
            'data.bucket_no_upscale': True, 'train.mixed_precision': 'bf16',
            'output.save_precision': 'fp16', 'train.multires_noise_iterations': 8, 'train.multires_noise_discount': 0.2,
            'train.min_snr_gamma': 10.0, 'output.save_every_n_epochs': 1, 'train.clip_skip': 1,
            'data.caption_extension': '.none-use-foldername', 'train.scale_weight_norms': 1.0}),
    'kss_old_lion_optimizer-LoHa.json': Row(  # sd-scripts passes decouple=True to lion_pytorch.Lion: TypeError
        'sd1', None, reg=False, unsupported=['optimizer_args'], gaps={'train.optimizer_args': 'optimizer_args'},
        steps_why='max_train_steps as given',
        columns={'network.network_module': 'loha', 'network.conv_dim': 8, 'network.conv_alpha': 8.0, 'network.use_dora':
            False, 'network.network_dim': 128, 'network.network_alpha': 128.0, 'train.optimizer_type': 'Lion',
            'train.optimizer_args': {'decouple': True, 'weight_decay': 0.01, 'betas': (0.9, 0.99)},
            'train.learning_rate': 3.333e-05, 'train.text_encoder_lr*': 1.6666e-05, 'train.lr_scheduler': 'cosine',
            'plan.total_steps': 1600, 'data.size': [512, 512], 'data.enable_bucket': True, 'data.bucket_mode': 'kohya',
            'data.min_bucket_reso': 256, 'data.max_bucket_reso': 2048, 'data.bucket_reso_steps': 64,
            'data.bucket_no_upscale': True, 'train.mixed_precision': 'bf16', 'output.save_precision': 'fp16',
            'train.min_snr_gamma': 3.0, 'output.save_every_n_epochs': 1, 'train.clip_skip': 1, 'data.random_crop': True,
            'train.seed': 1234}),
    'kss_old_sdxl-loha-kBlueLeaf.json': Row(
        'sdxl', None, reg=False, unsupported=[],
        steps_why='max_train_steps as given',
        columns={'network.network_module': 'loha', 'network.conv_dim': 4, 'network.conv_alpha': 4.0, 'network.use_dora':
            False, 'network.network_dim': 8, 'network.network_alpha': 8.0, 'network.train_text_encoder': False,
            'train.optimizer_type': 'AdamW8bit', 'train.optimizer_args': {'weight_decay': 0.05, 'betas': (0.9, 0.98)},
            'train.learning_rate': 0.002, 'train.lr_scheduler': 'cosine', 'plan.total_steps': 1600,
            'train.train_batch_size': 4, 'data.size': [1024, 1024], 'data.enable_bucket': True, 'data.bucket_mode':
            'kohya', 'data.min_bucket_reso': 512, 'data.max_bucket_reso': 2048, 'data.bucket_reso_steps': 64,
            'data.bucket_no_upscale': True, 'train.mixed_precision': 'bf16', 'output.save_precision': 'bf16',
            'train.noise_offset': 0.0357, 'train.min_snr_gamma': 5.0, 'output.save_every_n_epochs': 1,
            'data.caption_extension': '.txt', 'train.seed': 17415}),
    'kss_sd15-EDG-LoCon.json': Row(  # buckets off at 512,650: lorakit needs sides that are multiples of 8
        'sd1', None, reg=False, unsupported=['max_resolution'], gaps={'data.size': 'max_resolution'},
        steps_why='max_train_steps as given',
        columns={'network.network_module': 'locon', 'network.conv_dim': 32, 'network.conv_alpha': 1.0,
            'network.use_dora':
            False, 'network.network_dim': 64, 'network.network_alpha': 64.0, 'train.optimizer_type': 'AdamW8bit',
            'train.learning_rate': 0.0001, 'train.text_encoder_lr*': 5e-05, 'train.lr_scheduler': 'constant',
            'plan.total_steps': 1600, 'train.train_batch_size': 3, 'data.size': [512, 650], 'train.mixed_precision':
            'bf16', 'output.save_precision': 'bf16', 'train.noise_offset': 0.05, 'output.save_every_n_epochs': 1,
            'train.clip_skip': 2, 'data.caption_extension': '.txt', 'train.seed': 1234}),
    'kss_sd15-GLoRA.json': Row(
        'sd1', None, reg=False, unsupported=['bucket_reso_steps'],
        steps_why='max_train_steps as given',
        columns={'network.network_module': 'lokr', 'network.lokr_factor': 6, 'network.use_dora': False, 'network.scale':
            1.0, 'train.optimizer_args': {'weight_decay': 0.1, 'betas': (0.9, 0.99)}, 'train.learning_rate': 0.0001,
            'train.text_encoder_lr*': 0.0001, 'train.lr_scheduler': 'constant', 'plan.total_steps': 113, 'data.size':
            [768, 768], 'data.enable_bucket': True, 'data.bucket_mode': 'kohya', 'data.min_bucket_reso': 256,
            'data.max_bucket_reso': 2048, 'data.bucket_no_upscale': True,
            'train.mixed_precision': 'bf16', 'output.save_precision': 'fp16', 'train.multires_noise_iterations': 10,
            'train.multires_noise_discount': 0.3, 'train.min_snr_gamma': 5.0, 'output.save_every_n_steps': 29,
            'train.clip_skip': 1, 'data.caption_extension': '.txt', 'train.seed': 1234,
            'train.scale_weight_norms': 1.0}),
    'kss_sd15-LoKr-v2.json': Row(
        'sd1', None, reg=False, unsupported=['bucket_reso_steps'],
        steps_why='lora_gui.train_model: ceil(3*10 / 2 / 1 * 150 * 1) = 2250',
        columns={'network.network_module': 'lokr', 'network.lokr_factor': 6, 'network.use_dora': False, 'network.scale':
            1.0, 'train.optimizer_type': 'Prodigy', 'train.optimizer_args': {'d0': 1e-05, 'd_coef': 1.0, 'weight_decay':
            0.4, 'decouple': True, 'safeguard_warmup': True, 'use_bias_correction': True}, 'train.learning_rate': 1.0,
            'train.text_encoder_lr*': 1.0, 'train.lr_scheduler_type': 'CosineAnnealingLR', 'train.lr_scheduler_args*':
            {'T_max': 1000, 'eta_min': 0.0}, 'plan.total_steps': 2250, 'train.train_batch_size': 2, 'data.size': [512,
            512], 'data.enable_bucket': True, 'data.bucket_mode': 'kohya', 'data.min_bucket_reso': 256,
            'data.max_bucket_reso': 2048, 'data.bucket_no_upscale': True,
            'train.mixed_precision': 'bf16', 'output.save_precision': 'bf16', 'train.multires_noise_iterations': 6,
            'train.multires_noise_discount': 0.1, 'train.min_snr_gamma': 5.0, 'output.save_every_n_epochs': 15,
            'train.clip_skip': 1, 'data.caption_extension': '.txt', 'data.shuffle_caption': True,
            'data.keep_tokens': 1}),
    'kss_test_Diag-OFT-AdamW8bit-toml.json': Row(
        'sd1', 'kss_test_dataset.toml', reg=False, unsupported=['LoRA_type'],
        steps_why='train_util --max_train_steps default 1600',
        columns={'train.optimizer_type': 'AdamW8bit', 'train.learning_rate': 0.0005, 'train.text_encoder_lr*': 0.0005,
            'train.lr_scheduler': 'constant', 'plan.total_steps': 1600, 'train.train_batch_size': 4, 'data.size': [512,
            512], 'data.enable_bucket': True, 'data.bucket_mode': 'kohya', 'data.min_bucket_reso': 64,
            'data.max_bucket_reso': 1024, 'data.bucket_reso_steps': 64, 'data.bucket_no_upscale': True,
            'train.mixed_precision': 'bf16', 'output.save_precision': 'fp16', 'train.noise_offset': 0.05,
            'output.save_every_n_epochs': 1, 'train.clip_skip': 2, 'data.caption_extension': '.txt', 'data.keep_tokens':
            1, 'train.seed': 1234}),
    'kss_test_DyLoRA-Adafactor-toml.json': Row(
        'sd1', 'kss_test_dataset.toml', reg=False, unsupported=['LoRA_type'],
        steps_why='train_util --max_train_steps default 1600',
        columns={'train.optimizer_type': 'Adafactor', 'train.optimizer_args': {'relative_step': True},
            'train.lr_scheduler':
            'adafactor', 'plan.total_steps': 1600, 'train.train_batch_size': 4, 'data.size': [512, 512],
            'data.enable_bucket': True, 'data.bucket_mode': 'kohya', 'data.min_bucket_reso': 64, 'data.max_bucket_reso':
            1024, 'data.bucket_reso_steps': 64, 'data.bucket_no_upscale': True, 'train.mixed_precision': 'fp16',
            'output.save_precision': 'fp16', 'train.multires_noise_iterations': 6, 'train.multires_noise_discount': 0.1,
            'train.min_snr_gamma': 5.0, 'output.save_every_n_epochs': 15, 'train.clip_skip': 1,
            'data.caption_extension': '.txt', 'data.shuffle_caption': True, 'data.keep_tokens': 1}),
    'kss_test_LoKR-AdamW8bit-toml.json': Row(
        'sd1', 'kss_test_dataset.toml', reg=False, unsupported=[],
        steps_why='train_util --max_train_steps default 1600',
        columns={'network.network_module': 'lokr', 'network.lokr_factor': 6, 'network.use_dora': False, 'network.scale':
            1.0, 'train.optimizer_type': 'Prodigy', 'train.optimizer_args': {'d0': 1e-05, 'd_coef': 1.0, 'weight_decay':
            0.4, 'decouple': True, 'safeguard_warmup': True, 'use_bias_correction': True}, 'train.learning_rate': 1.0,
            'train.text_encoder_lr*': 1.0, 'train.lr_scheduler_type': 'CosineAnnealingLR', 'train.lr_scheduler_args*':
            {'T_max': 1000, 'eta_min': 0.0}, 'plan.total_steps': 1600, 'train.train_batch_size': 4, 'data.size': [512,
            512], 'data.enable_bucket': True, 'data.bucket_mode': 'kohya', 'data.min_bucket_reso': 64,
            'data.max_bucket_reso': 1024, 'data.bucket_reso_steps': 64, 'data.bucket_no_upscale': True,
            'train.mixed_precision': 'bf16', 'output.save_precision': 'bf16', 'train.multires_noise_iterations': 6,
            'train.multires_noise_discount': 0.1, 'train.min_snr_gamma': 5.0, 'output.save_every_n_epochs': 15,
            'train.clip_skip': 1, 'data.caption_extension': '.txt', 'data.shuffle_caption': True,
            'data.keep_tokens': 1}),
    'kss_test_SDXL-Standard-Adafactor.json': Row(
        'sdxl', None, reg=False, unsupported=[],
        steps_why='max_train_steps as given',
        columns={'network.network_module': 'lora', 'network.network_dim': 64, 'network.network_alpha': 64.0,
            'network.train_text_encoder': False, 'train.optimizer_type': 'AdamW8bit', 'train.learning_rate': 0.001,
            'train.lr_scheduler': 'constant', 'plan.total_steps': 1600, 'data.size': [1024, 1024], 'data.enable_bucket':
            True, 'data.bucket_mode': 'kohya', 'data.min_bucket_reso': 256, 'data.max_bucket_reso': 2048,
            'data.bucket_reso_steps': 32, 'data.bucket_no_upscale': False, 'train.mixed_precision': 'bf16',
            'output.save_precision': 'fp16', 'train.noise_offset': 0.0357, 'train.min_snr_gamma': 10.0,
            'output.save_every_n_epochs': 1, 'data.caption_extension': '.none-use-foldername'}),
    'kss_test_locon-AdamW8bit.json': Row(
        'sd1', None, reg=False, unsupported=[],
        steps_why='lora_gui.train_model: ceil(3*10 / 4 / 1 * 8 * 1) = 60',
        columns={'network.network_module': 'locon', 'network.conv_dim': 16, 'network.conv_alpha': 8.0,
            'network.network_dim': 16, 'network.network_alpha': 8.0, 'network.network_dropout': 0.1,
            'network.dropout_placement': 'kohya', 'network.rank_dropout': 0.1, 'network.module_dropout': 0.1,
            'train.optimizer_type': 'AdamW8bit', 'train.learning_rate': 0.0001, 'train.text_encoder_lr*': 0.0001,
            'train.lr_scheduler': 'constant', 'plan.total_steps': 60, 'train.train_batch_size': 4, 'data.size': [512,
            512], 'data.enable_bucket': True, 'data.bucket_mode': 'kohya', 'data.min_bucket_reso': 256,
            'data.max_bucket_reso': 2048, 'data.bucket_reso_steps': 64, 'data.bucket_no_upscale': True,
            'train.mixed_precision': 'bf16', 'output.save_precision': 'fp16', 'train.noise_offset': 0.05,
            'train.adaptive_noise_scale': 0.005, 'train.ip_noise_gamma': 0.1, 'train.debiased_estimation_loss': True,
            'output.save_every_n_epochs': 1, 'train.clip_skip': 2, 'train.seed': 1234,
            'train.scale_weight_norms': 1.0}),
    'kss_test_loha-Prodigy.json': Row(
        'sdxl', None, reg=False, unsupported=[],
        steps_why='max_train_steps as given',
        columns={'network.network_module': 'loha', 'network.conv_dim': 4, 'network.conv_alpha': 4.0, 'network.use_dora':
            False, 'network.network_dim': 8, 'network.network_alpha': 8.0, 'network.train_text_encoder': False,
            'train.optimizer_type': 'AdamW8bit', 'train.optimizer_args': {'weight_decay': 0.05, 'betas': (0.9, 0.98)},
            'train.learning_rate': 0.002, 'train.lr_scheduler': 'cosine', 'plan.total_steps': 1600, 'data.size': [1024,
            1024], 'data.enable_bucket': True, 'data.bucket_mode': 'kohya', 'data.min_bucket_reso': 256,
            'data.max_bucket_reso': 2048, 'data.bucket_reso_steps': 64, 'data.bucket_no_upscale': False,
            'train.mixed_precision': 'bf16', 'output.save_precision': 'bf16', 'train.noise_offset': 0.0357,
            'train.min_snr_gamma': 5.0, 'output.save_every_n_epochs': 1, 'data.caption_extension': '.txt', 'train.seed':
            17415}),
    'kss_test_t5clrs.json': Row(
        'sdxl', None, reg=False, unsupported=[],
        steps_why='train_network.py: max_train_epochs wins: 50 * ceil(ceil(30 / 3) / 1) = 500',
        columns={'network.network_module': 'lora', 'network.network_dim': 16, 'network.network_alpha': 2.0,
            'train.optimizer_type': 'Prodigy', 'train.optimizer_args': {'weight_decay': 0.01, 'd_coef': 1,
            'use_bias_correction': True, 'safeguard_warmup': False, 'betas': (0.9, 0.99)}, 'train.learning_rate': 1.0,
            'train.text_encoder_lr*': 1.0, 'train.lr_scheduler': 'cosine', 'plan.total_steps': 500,
            'train.train_batch_size': 3, 'data.size': [1024, 1024], 'data.enable_bucket': True, 'data.bucket_mode':
            'kohya', 'data.min_bucket_reso': 512, 'data.max_bucket_reso': 2048, 'data.bucket_reso_steps': 256,
            'data.bucket_no_upscale': True, 'train.mixed_precision': 'bf16', 'output.save_precision': 'bf16',
            'train.lora_precision': 'bf16', 'output.save_every_n_epochs': 10, 'data.caption_extension': '.txt',
            'data.shuffle_caption': True, 'data.keep_tokens': 4, 'train.seed': 1055217506}),
    'lycoris_kohya_lora_config.toml': Row(
        'sd1', 'lycoris_kohya_dataset_config.toml', reg=False, unsupported=[],
        steps_why='train_network.py: max_train_epochs wins: 2 * ceil(ceil(3 / 8) / 1) = 2',
        columns={'network.network_module': 'lora', 'network.use_dora': False, 'network.network_dim': 16,
            'network.network_alpha': 8.0, 'train.optimizer_type': 'AdamW8bit', 'train.optimizer_args': {'weight_decay':
            0.1, 'betas': (0.9, 0.99)}, 'train.learning_rate': 0.0002, 'train.text_encoder_lr*': 0.0002,
            'train.lr_scheduler': 'constant', 'plan.total_steps': 2, 'train.train_batch_size': 8, 'data.size': [512,
            512], 'data.enable_bucket': True, 'data.bucket_mode': 'kohya', 'data.min_bucket_reso': 320,
            'data.max_bucket_reso': 960, 'data.bucket_reso_steps': 64, 'data.bucket_no_upscale': False,
            'train.mixed_precision': 'bf16', 'output.save_precision': 'fp16', 'train.multires_noise_iterations': 10,
            'train.multires_noise_discount': 0.3, 'train.min_snr_gamma': 5.0, 'output.save_every_n_epochs': 10,
            'output.save_every_n_steps': 5000, 'train.clip_skip': 2, 'train.max_token_length': 150,
            'data.caption_extension': '.txt', 'data.keep_tokens': 1, 'train.seed': 23}),
    'motimalu_prodigy-01-eps.toml': Row(
        'sdxl', None, reg=False, unsupported=[],
        steps_why='train_network.py: max_train_epochs wins: 30 * ceil(ceil(30 / 6) / 1) = 150',
        columns={'network.network_module': 'lora', 'network.network_dim': 32, 'network.network_alpha': 32.0,
            'train.optimizer_type': 'Prodigy', 'train.learning_rate': 1.0, 'train.text_encoder_lr*': 1.0,
            'train.lr_scheduler': 'constant', 'plan.total_steps': 150, 'train.train_batch_size': 6, 'data.size': [1024,
            1024], 'data.enable_bucket': True, 'data.bucket_mode': 'kohya', 'data.min_bucket_reso': 512,
            'data.max_bucket_reso': 2048, 'data.bucket_reso_steps': 256, 'data.bucket_no_upscale': True,
            'train.mixed_precision': 'bf16', 'output.save_precision': 'bf16', 'train.lora_precision': 'bf16',
            'train.multires_noise_iterations': 6, 'train.multires_noise_discount': 0.3, 'train.min_snr_gamma': 5.0,
            'output.save_every_n_epochs': 5, 'train.max_token_length': 225, 'data.caption_extension': '.txt',
            'train.seed': 339491249}),
    'motimalu_prodigy-01-v-pred.toml': Row(
        'sdxl', None, reg=False, unsupported=[],
        steps_why='train_network.py: max_train_epochs wins: 30 * ceil(ceil(30 / 6) / 1) = 150',
        columns={'network.network_module': 'lora', 'network.network_dim': 32, 'network.network_alpha': 32.0,
            'train.optimizer_type': 'Prodigy', 'train.learning_rate': 1.0, 'train.text_encoder_lr*': 1.0,
            'train.lr_scheduler': 'cosine', 'plan.total_steps': 150, 'train.train_batch_size': 6, 'data.size': [1024,
            1024], 'data.enable_bucket': True, 'data.bucket_mode': 'kohya', 'data.min_bucket_reso': 512,
            'data.max_bucket_reso': 2048, 'data.bucket_reso_steps': 256, 'data.bucket_no_upscale': True,
            'train.mixed_precision': 'bf16', 'output.save_precision': 'bf16', 'train.lora_precision': 'bf16',
            'train.min_snr_gamma': 5.0, 'output.save_every_n_epochs': 5, 'train.max_token_length': 225,
            'data.caption_extension': '.txt', 'train.seed': 339491249, 'model.v_parameterization': True}),

}
