"""iLECO: prompt pairs train the UNet so the original prompt predicts what the base model predicts for the target;
the saved file carries the edit, the target formula is LECO's erase, and every network type and family trains."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from diffusers import DDPMScheduler
from safetensors.torch import load_file

from lorakit import api
from lorakit.config.loader import load_config
from lorakit.config.schema import LorakitConfig
from lorakit.config.validate import check
from lorakit.errors import ConfigError
from lorakit.families import get_family, load_model
from lorakit.modes.ileco import Edit, EditSampler, IlecoTask, edits
from lorakit.networks.loading import attach_file

ORIGINAL, TARGET = "a cat", "a dog"
KEPT = "a house"  # a preservation pair (original = target): the edit should leave other prompts alone
UNRELATED = ["green hills", "a red car", "xyz", "portrait of an old man with a long white beard"]


def ileco_config(tmp_path: Path, *extra: str) -> LorakitConfig:
    return load_config(sets=[
        "mode.type='ileco'", f"mode.original_prompt='{ORIGINAL}'", f"mode.target_prompt='{TARGET}'",
        f'output.output_dir="{tmp_path / "runs"}"', "data.resolution=64", "network.network_dim=4",
        "network.network_alpha=4", "train.train_batch_size=2", *extra,
    ])


class Predictions:
    """UNet outputs on fixed held-out noise and timesteps, for prompts, on a model freshly loaded from disk."""

    def __init__(self, cfg: LorakitConfig, count: int = 16, seed: int = 1234) -> None:
        self.parts = load_model(cfg.model)
        gen = torch.Generator().manual_seed(seed)  # not the run's seed: held-out noise and timesteps
        self.x = torch.randn((count, 4, 8, 8), generator=gen)
        self.t = torch.randint(0, 1000, (count,), generator=gen)

    @torch.no_grad()
    def __call__(self, prompt: str) -> torch.Tensor:
        fam, n = self.parts.family, len(self.t)
        cond = fam.encode_prompts(self.parts, [prompt] * n)
        sizes = [{"original_size": (64, 64), "crop_top_left": (0, 0), "target_size": (64, 64)}] * n
        return self.parts.unet(self.x, self.t, **fam.unet_kwargs(cond, sizes)).sample


def mse(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a - b).pow(2).mean().item()


def test_original_prompt_learns_the_target_and_other_prompts_stay(tmp_path: Path) -> None:
    cfg = ileco_config(tmp_path, "train.learning_rate=4e-3", "train.max_train_steps=30",
                       f"mode.prompts=[{{original_prompt='{KEPT}', target_prompt='{KEPT}'}}]")
    result = api.train(cfg)
    predict = Predictions(cfg)
    base = {p: predict(p) for p in [ORIGINAL, TARGET, *UNRELATED]}
    attach_file(predict.parts, load_file(result.lora_path))  # the saved file, on a fresh model
    edited = {p: predict(p) for p in [ORIGINAL, *UNRELATED]}

    before, after = mse(base[ORIGINAL], base[TARGET]), mse(edited[ORIGINAL], base[TARGET])
    assert after <= 0.5 * before, (before, after)  # measured: 85 % closer
    moved = mse(edited[ORIGINAL], base[ORIGINAL])
    others = sum(mse(edited[p], base[p]) for p in UNRELATED) / len(UNRELATED)
    assert others < 0.5 * moved, (others, moved)  # measured: 0.29 (0.14–0.37 per prompt)


def test_target_is_lecos_erase_with_guidance() -> None:
    """y = eps0(target) − g·(eps0(original) − eps0("")), written here from LECO's `_erase`, on a fake UNet whose
    output per prompt is known: out = x · w(prompt) + t / 1000."""
    w = {"cat": 2.0, "dog": -1.0, "": 0.5, "car": 3.0}
    conds = {p: {"encoder_hidden_states": torch.full((3, 2), v)} for p, v in w.items()}

    class FakeUnet(torch.nn.Module):
        config = SimpleNamespace(in_channels=1)

        def forward(self, x, t, encoder_hidden_states):
            scale = encoder_hidden_states.mean(dim=(1, 2)).view(-1, 1, 1, 1)
            return SimpleNamespace(sample=x * scale + t.view(-1, 1, 1, 1) / 1000)

    calls: list[int] = []
    unet = FakeUnet()
    unet.register_forward_hook(lambda m, args, out: calls.append(len(args[0])))
    parts = SimpleNamespace(unet=unet, family=get_family("sd1"), pipeline=SimpleNamespace(vae_scale_factor=8),
                            noise_scheduler=DDPMScheduler())
    cfg = load_config(sets=["mode.type='ileco'", "mode.original_prompt='cat'", "data.resolution=64"])
    task = IlecoTask(parts, cfg, EditSampler([], 1), conds)
    x = torch.randn(3, 1, 8, 8)
    t = torch.tensor([10, 500, 900])
    batch = [Edit("cat", "dog", 1.5), Edit("car", "", 2.0), Edit("cat", "dog", 0.0)]

    eps = lambda i, p: x[i] * w[p] + t[i] / 1000  # noqa: E731
    expected = torch.stack([
        eps(0, "dog") - 1.5 * (eps(0, "cat") - eps(0, "")),
        eps(1, "") - 2.0 * (eps(1, "car") - eps(1, "")),  # empty target = erase
        eps(2, "dog"),  # g = 0: TrainTrain's iLECO
    ])
    torch.testing.assert_close(task.target(batch, x, t), expected)
    assert calls == [6]  # one forward over the distinct (element, prompt) rows: 3 + 2 + 1

    calls.clear()
    task.target([Edit("cat", "dog", 0.0)] * 2, x[:2], t[:2])
    assert calls == [2]  # the default (g = 0) costs one frozen forward per step, plus the trained one


def test_pairs_are_batched_in_order_cycling() -> None:
    cfg = load_config(sets=[
        "mode.type='ileco'", "mode.original_prompt='a'", "mode.target_prompt='A'", "mode.guidance_scale=0.5",
        "mode.prompts=[{original_prompt='b', guidance_scale=-1.0}, {original_prompt='c', target_prompt='C'}]",
    ])
    a, b, c = edits(cfg.mode)  # type: ignore[arg-type]
    assert (a, b, c) == (Edit("a", "A", 0.5), Edit("b", "", -1.0), Edit("c", "C", 0.5))
    sampler = EditSampler([a, b, c], batch_size=2)
    assert len(sampler) == 2  # an epoch: ceil(3 pairs / 2)
    assert list(sampler.batches(1)) == [[a, b], [c, a]]
    assert list(sampler.batches(2)) == [[b, c], [a, b]]  # the cycle goes on: every pair as often as the others
    assert list(EditSampler([a], 3).batches(1)) == [[a, a, a]]  # one pair: B noise latents and timesteps
    assert list(EditSampler([a, b, c], 2, accumulation=2).batches(1)) == [[a, b], [c, a], [b, c], [a, b]]


def test_gradient_accumulation_accumulates_batches(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each optimizer step sums `gradient_accumulation_steps` batches, also with one pair (an epoch of one step)."""
    calls: list[int] = []
    loss = IlecoTask.loss
    monkeypatch.setattr(IlecoTask, "loss", lambda self, batch, gen: (calls.append(len(batch)), loss(self, batch, gen))[1])
    result = api.train(ileco_config(tmp_path, "train.max_train_steps=2", "train.gradient_accumulation_steps=3",
                                    "train.train_batch_size=1"))
    assert result.steps == 2 and calls == [1] * 6


@pytest.mark.parametrize("model, network", [
    ("tiny-sd2-v", ["network.network_module='lora'"]),
    ("tiny-sd1", ["network.network_module='locon'", "mode.guidance_scale=1.0"]),
    ("tiny-sdxl", ["network.network_module='loha'"]),
    ("tiny-sd1", ["network.network_module='lokr'", "mode.target_prompt=''", "mode.guidance_scale=1.0"]),
    ("tiny-sdxl", ["network.network_module='lora'", "network.use_dora=true", "train.min_snr_gamma=5.0"]),
], ids=["lora-sd2v", "locon-sd1", "loha-sdxl", "lokr-sd1-erase", "dora-sdxl"])
def test_every_network_type_and_family_trains(tmp_path: Path, model: str, network: list[str]) -> None:
    cfg = ileco_config(tmp_path, f"model.pretrained_model_name_or_path='{model}'", "train.max_train_steps=2",
                       "train.learning_rate=1e-3", *network)
    result = api.train(cfg)
    assert result.steps == 2
    log = (result.run_dir / "train" / "log.csv").read_text().splitlines()
    losses = [float(line.split(",")[2]) for line in log[1:]]
    assert len(losses) == 2 and all(torch.isfinite(torch.tensor(losses)))
    predict = Predictions(cfg, count=2)
    base = predict(ORIGINAL)
    attach_file(predict.parts, load_file(result.lora_path))
    assert mse(predict(ORIGINAL), base) > 0  # the file changes the model


def test_config_is_checked() -> None:
    with pytest.raises(ConfigError, match="ileco needs original_prompt"):
        load_config(sets=["mode.type='ileco'"])
    cfg = LorakitConfig.model_validate({"mode": {"type": "ileco", "original_prompt": "a cat"},
                                        "data": {"train_data_dir": "images"}, "train": {"cache_latents": False}})
    errors, _ = check(cfg)
    assert {f.key: f.message for f in errors} == {
        "data.train_data_dir": "is not used by mode 'ileco' (it does not train on an image folder); remove it",
        "train.cache_latents": "is not used by mode 'ileco': it encodes no images; remove it",
    }
    assert LorakitConfig.model_validate({"mode": {"type": "ileco", "original_prompt": "a"}}).mode.guidance_scale == 0
