"""Cross-field rules of the noise and loss options (engine/loss.py), as sd-scripts' verify_training_args enforces
them, plus the settings that would have no effect (warnings).

Torch-free, like the rest of config validation; `validate.check` calls `check_loss_options`. Which modes refuse
these options (iLECO) is `mode_rules`' business. The prediction type is known here only when
model.v_parameterization is set; the task checks the loaded model's (modes/lora.py check_prediction_type).
"""

from __future__ import annotations

from .schema import LorakitConfig
from .validate import Finding

SCHEDULE_LENGTH = 1000  # num_train_timesteps of every supported family's noise schedule


def check_loss_options(cfg: LorakitConfig) -> list[Finding]:
    """Errors for combinations sd-scripts refuses or that cannot run; warnings for settings without effect."""
    t, v_pred = cfg.train, cfg.model.v_parameterization
    found = check_timesteps(t.min_timestep, t.max_timestep)
    if t.adaptive_noise_scale is not None and not t.noise_offset:
        found.append(Finding("train.adaptive_noise_scale", "adds to the noise offset, but train.noise_offset is 0: "
                                                           "set noise_offset too (sd-scripts requires it)"))
    inert = [
        (t.noise_offset_random_strength and not t.noise_offset, "train.noise_offset_random_strength",
         "train.noise_offset is 0"),
        (t.ip_noise_gamma_random_strength and not t.ip_noise_gamma, "train.ip_noise_gamma_random_strength",
         "train.ip_noise_gamma is not set"),
        (t.multires_noise_discount != 0.3 and not t.multires_noise_iterations, "train.multires_noise_discount",
         "train.multires_noise_iterations is not set"),
    ]
    found += [Finding(key, f"has no effect: {why}", False) for on, key, why in inert if on]
    if t.scale_v_pred_loss_like_noise_pred and v_pred is False:
        found.append(Finding("train.scale_v_pred_loss_like_noise_pred", "scales a v-prediction loss, but "
                             "model.v_parameterization is false; remove one (sd-scripts refuses this too)"))
    if t.v_pred_like_loss and v_pred:
        found.append(Finding("train.v_pred_like_loss", "adds a v-like term to a noise-prediction loss, but "
                             "model.v_parameterization is true; remove one (sd-scripts refuses this too)"))
    if t.zero_terminal_snr and v_pred is False:
        found.append(Finding("train.zero_terminal_snr", "is meant for v-prediction: an epsilon model cannot "
                             "predict the noise from pure noise at the last timestep (sd-scripts warns the same)",
                             False))
    return found


def check_timesteps(low: int | None, high: int | None) -> list[Finding]:
    """[min_timestep, max_timestep) must hold a timestep of the schedule; min = max trains at that one timestep
    (sd-scripts get_timesteps)."""
    lo, hi = low or 0, SCHEDULE_LENGTH if high is None else high
    if lo > hi:
        key = "train.min_timestep" if low is not None else "train.max_timestep"
        return [Finding(key, f"min_timestep ({lo}) is above max_timestep ({hi}): the range is [min, max); "
                             "lower min_timestep or raise max_timestep")]
    if lo == hi == SCHEDULE_LENGTH:
        return [Finding("train.min_timestep", f"{lo} equals max_timestep ({hi}), so every step would train at "
                        f"timestep {hi}, past the schedule's last ({SCHEDULE_LENGTH - 1}); lower it")]
    return []
