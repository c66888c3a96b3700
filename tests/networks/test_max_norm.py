"""Max-norm regularisation (train.scale_weight_norms) against sd-scripts networks/lora.py
apply_max_norm_regularization and LyCORIS modules' apply_max_norm: each module's ΔW (computed here from the saved
file's tensors with the published formulas, scale alpha/dim included) is scaled down to exactly max_norm when it
is above, left alone when not; the count and the norms after scaling are returned."""

from __future__ import annotations

import pytest
import torch

from lorakit.config.schema import ModelSection, NetworkSection
from lorakit.families import load_model
from lorakit.networks import formats
from lorakit.networks.attach import adapter_layers, attach_network
from lorakit.networks.max_norm import apply_max_norm
from lorakit.networks.targets import select_targets

from .test_network_types import KINDS, adapted, delta


def file_norms(parts) -> dict[str, float]:
    """{kohya module name: ‖ΔW‖} from the network's kohya/LyCORIS file tensors."""
    sd, layers = formats.to_kohya(parts), formats.kohya_modules(parts)
    out = {}
    for name in {k.split(".")[0] for k in sd}:
        t = {k.split(".", 1)[1]: v for k, v in sd.items() if k.split(".")[0] == name}
        out[name] = delta(t, layers[name].weight.shape).norm().item()
    return out


def sd_scripts_result(norms: list[float], max_norm: float) -> tuple[int, float, float]:
    """apply_max_norm_regularization's (keys_scaled, mean, max): norm clamped below at max_norm/2, ratio =
    min(norm, max_norm)/norm, scaled norm = norm · ratio."""
    scaled, after = 0, []
    for n in norms:
        clamped = max(n, max_norm / 2)
        ratio = min(clamped, max_norm) / clamped
        scaled += ratio != 1
        after.append(n * ratio)
    return scaled, sum(after) / len(after), max(after)


@torch.no_grad()
def test_a_large_module_is_scaled_to_exactly_max_norm_and_small_ones_stay() -> None:
    parts = load_model(ModelSection(pretrained_model_name_or_path="tiny-sd1"))
    cfg = NetworkSection(network_dim=4, network_alpha=2, train_text_encoder=False)
    attach_network(parts, cfg, select_targets(parts, cfg).components())
    layers = [layer for _, layer in adapter_layers(parts.unet).values()]
    big, small, middle = layers[:3]
    max_norm = 0.5
    for layer, target in ((big, 4 * max_norm), (small, 0.3 * max_norm), (middle, 0.8 * max_norm)):
        a, b = layer.lora_A["lorakit"].weight, layer.lora_B["lorakit"].weight
        a.copy_(torch.randn(a.shape, generator=torch.Generator().manual_seed(1)))
        b.copy_(torch.randn(b.shape, generator=torch.Generator().manual_seed(2)))
        norm = (b.flatten(1) @ a.flatten(1)).norm() * 2 / 4  # scale alpha/dim
        b.mul_(target / norm)
    before = file_norms(parts)
    assert sorted(round(n / max_norm, 4) for n in before.values() if n)[-3:] == [0.3, 0.8, 4.0]
    untouched = {k: v.clone() for k, v in formats.to_kohya(parts).items()}
    big_down = big.lora_A["lorakit"].weight.clone()

    result = apply_max_norm(parts, max_norm)

    after = file_norms(parts)
    scaled = [k for k in after if before[k] > max_norm]
    assert len(scaled) == 1 and after[scaled[0]] == pytest.approx(max_norm, rel=1e-5)
    sd = formats.to_kohya(parts)
    assert all(torch.equal(sd[k], untouched[k]) for k in sd if not k.startswith(scaled[0] + "."))
    # sd-scripts scales down and up by √ratio each
    assert torch.allclose(big.lora_A["lorakit"].weight, big_down * (max_norm / before[scaled[0]]) ** 0.5, rtol=1e-5)
    keys, mean, top = sd_scripts_result(list(before.values()), max_norm)
    assert result.keys_scaled == keys == 1
    assert result.mean_norm == pytest.approx(mean, rel=1e-5) and result.max_norm == pytest.approx(top, rel=1e-5)


@pytest.mark.parametrize("kind", list(KINDS))
@torch.no_grad()
def test_every_network_type_is_capped(kind: str) -> None:
    """LoRA, LoCon, LoHa, LoKr, DoRA (UNet and text encoder): every module above the median norm ends at it."""
    parts = adapted("tiny-sd1", kind)
    before = file_norms(parts)
    max_norm = sorted(before.values())[len(before) // 2]
    magnitudes = {k: v.clone() for k, v in formats.to_kohya(parts).items() if k.endswith("dora_scale")}

    result = apply_max_norm(parts, max_norm)

    after = file_norms(parts)
    above = [k for k, n in before.items() if n > max_norm]
    assert above and result.keys_scaled == len(above)
    for k, n in after.items():
        assert n == pytest.approx(max_norm if k in above else before[k], rel=1e-4), k
    sd = formats.to_kohya(parts)
    assert all(torch.equal(sd[k], v) for k, v in magnitudes.items())  # DoRA's magnitude is not ΔW's
    keys, mean, top = sd_scripts_result(list(before.values()), max_norm)
    assert (result.keys_scaled, result.mean_norm, result.max_norm) == (keys, pytest.approx(mean, rel=1e-4),
                                                                       pytest.approx(top, rel=1e-4))
    assert apply_max_norm(parts, max_norm * 1.001).keys_scaled == 0  # at the cap now: nothing more to scale


def test_only_the_named_adapter_is_scaled() -> None:
    """Difference's pass 2 trains `lorakit` over a frozen copy machine: the copy machine is never scaled."""
    parts = adapted("tiny-sd1", "lora")
    before = formats.to_kohya(parts)
    result = apply_max_norm(parts, 1e-6, adapter="copy_machine")
    assert result.keys_scaled == 0 and result.mean_norm == 0.0
    assert all(torch.equal(v, before[k]) for k, v in formats.to_kohya(parts).items())


def test_a_run_caps_every_saved_module(tmp_path, image_dir) -> None:
    """train.scale_weight_norms in a real run: after the last step every module of the saved file is at most
    max_norm (the same run without it goes above)."""
    from safetensors.torch import load_file

    from lorakit import api
    from lorakit.config.loader import load_config

    def saved_norms(*extra: str) -> list[float]:
        cfg = load_config(sets=[f'data.train_data_dir="{image_dir}"', f'output.output_dir="{tmp_path / "runs"}"',
                                "data.resolution=64", "train.max_train_steps=2", "network.network_dim=2",
                                "train.learning_rate=1e-2", "output.save_precision='fp32'", *extra])
        sd = load_file(api.train(cfg).lora_path)
        names = {k.split(".")[0] for k in sd}  # ΔW = alpha/dim · up @ down (networks/lora.py)
        return [((sd[f"{n}.lora_up.weight"].flatten(1) @ sd[f"{n}.lora_down.weight"].flatten(1))
                 * sd[f"{n}.alpha"] / sd[f"{n}.lora_down.weight"].shape[0]).norm().item() for n in names]

    cap = 1e-3
    assert max(saved_norms()) > 2 * cap
    assert max(saved_norms("train.scale_weight_norms=0.001")) == pytest.approx(cap, rel=1e-4)
