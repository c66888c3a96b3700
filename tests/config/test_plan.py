"""The step math against a table of cases, and the plan built from real folders."""

from __future__ import annotations

from pathlib import Path

import pytest

from lorakit.config.loader import build_layers, merged_values, resolve_layers
from lorakit.config.schema import LorakitConfig, ModelSection
from lorakit.families import load_model
from lorakit.errors import ConfigError
from lorakit.config.plan import build_plan, compute_steps, kohya_gui_estimate, render_plan, reg_factor

F, R = False, True  # is_reg

# folders (images, repeats, is_reg), batch, accumulation, epochs, max_train_steps →
#   samples/epoch, batches/epoch, steps/epoch, epochs run, total steps, kohya_ss GUI estimate
CASES = [
    ([(10, 10, F)], 1, 1, 1, None, 100, 100, 100, 1, 100, 100),
    ([(10, 10, F)], 4, 1, 1, None, 100, 25, 25, 1, 25, 25),
    ([(10, 3, F)], 4, 1, 3, None, 30, 8, 8, 3, 24, 23),  # per-epoch ceil: the GUI's estimate is one short
    ([(10, 3, F)], 4, 2, 3, None, 30, 8, 4, 3, 12, 12),
    ([(20, 5, F), (100, 1, R)], 2, 1, 2, None, 200, 100, 100, 2, 200, 200),  # reg factor 2; reg size irrelevant
    ([(10, 10, F)], 4, 1, 10, 60, 100, 25, 25, 3, 60, 250),  # max_train_steps wins; epochs follow from it
    ([(3, 10, F), (2, 5, F)], 2, 3, 2, None, 40, 20, 7, 2, 14, 14),
    ([(7, 1, F)], 3, 1, 5, None, 7, 3, 3, 5, 15, 12),
    ([(80, 1, F)], 1, 1, 5, None, 80, 80, 80, 5, 400, 400),  # 003's floor plans: 80 images, 5 epochs, batch 1
]


@pytest.mark.parametrize("folders,batch,accum,epochs,max_steps,samples,batches,per_epoch,run_epochs,total,gui", CASES)
def test_step_table(folders, batch, accum, epochs, max_steps, samples, batches, per_epoch, run_epochs, total, gui):
    s = compute_steps(folders, batch, accum, epochs, max_steps)
    assert (s.samples_per_epoch, s.batches_per_epoch, s.steps_per_epoch, s.epochs, s.total_steps) == (
        samples, batches, per_epoch, run_epochs, total)
    assert kohya_gui_estimate(folders, batch, accum, epochs) == gui


def test_reg_factor() -> None:
    assert reg_factor([(1, 1, F)]) == 1
    assert reg_factor([(1, 1, F), (5, 2, R)]) == 2


def test_buckets_override_batches_per_epoch() -> None:
    s = compute_steps([(10, 1, F)], 4, 1, 2, batches_per_epoch=4)  # e.g. buckets of 6 and 4 images → 2 + 1 + 1
    assert (s.batches_per_epoch, s.steps_per_epoch, s.total_steps) == (4, 4, 8)


@pytest.mark.parametrize("steps,ratio,total,expected", [(0, 0.1, 123, 12), (50, None, 40, 40), (5, None, 40, 5),
                                                        (0, 0.05, 400, 20), (0, None, 10, 0)])
def test_warmup_from_count_or_ratio(steps: int, ratio: float | None, total: int, expected: int) -> None:
    s = compute_steps([(total, 1, F)], 1, 1, 1, warmup_steps=steps, warmup_ratio=ratio)
    assert s.total_steps == total and s.warmup_steps == expected


def test_text_encoder_stop_saves_and_samples() -> None:
    s = compute_steps([(350, 1, F)], 1, 1, 1, text_encoder_stop=30, save_every=100, sample_every=150)
    assert (s.text_encoder_stop, s.save_steps, s.sample_steps) == (30, (100, 200, 300), (150, 300))
    s = compute_steps([(300, 1, F)], 1, 1, 1, text_encoder_stop=500, save_every=100)
    assert (s.text_encoder_stop, s.save_steps, s.sample_steps) == (300, (100, 200), ())


def write_images(folder: Path, count: int, size: tuple[int, int]) -> None:
    from PIL import Image

    folder.mkdir(parents=True)
    for i in range(count):
        Image.new("RGB", size, (i * 40, 0, 0)).save(folder / f"{i}.png")


def test_plan_from_folders(tmp_path: Path) -> None:
    write_images(tmp_path / "img" / "10_cat", 3, (64, 64))
    write_images(tmp_path / "img" / "5_dog", 2, (64, 64))
    write_images(tmp_path / "reg" / "1_animal", 4, (64, 64))
    r = resolve_layers(sets=[f'data.train_data_dir="{tmp_path / "img"}"', f'data.reg_data_dir="{tmp_path / "reg"}"',
                             "data.resolution=64", "data.min_bucket_reso=32", "data.bucket_reso_steps=32",
                             "train.train_batch_size=2", "train.max_train_epochs=3", "output.save_every_n_steps=50",
                             "train.lr_warmup_ratio=0.1", "network.train_text_encoder=true",
                             "train.stop_text_encoder_training=20", "output.run_id=r1"])
    plan = build_plan(r.config)
    assert plan.steps.samples_per_epoch == (3 * 10 + 2 * 5) * 2
    assert (plan.steps.batches_per_epoch, plan.steps.total_steps, plan.steps.warmup_steps) == (40, 120, 12)
    lines = render_plan(plan)
    assert f"  {tmp_path / 'img' / '10_cat'}: 3 images × 10 repeats = 30 (train)" in lines
    assert f"  {tmp_path / 'reg' / '1_animal'}: 4 images × 1 repeats = 4 (reg)" in lines
    assert "regularisation factor: 2" in lines
    assert "buckets: 64x64 (5)" in lines
    assert "total steps: 120" in lines
    assert "text encoder: trained until step 20" in lines
    assert "saves: 50, 100 (2) + final at 120" in lines
    assert f"output: {Path('runs') / 'r1' / 'train' / 'lora.safetensors'}" in lines


def test_plan_notes_the_kohya_gui_estimate(tmp_path: Path) -> None:
    write_images(tmp_path / "img" / "1_x", 7, (64, 64))
    r = resolve_layers(sets=[f'data.train_data_dir="{tmp_path / "img"}"', "data.resolution=64",
                             "data.min_bucket_reso=64", "train.train_batch_size=3", "train.max_train_epochs=5"])
    plan = build_plan(r.config)
    assert plan.steps.total_steps == 15
    assert plan.notes == ["the kohya_ss GUI would estimate 12 steps (it rounds once over all epochs, not per epoch)"]
    assert plan.text_encoder == "frozen"


def test_plan_counts_sub_images_and_mirrors(tmp_path) -> None:
    """2 images × 10 repeats, each giving 1 + 3 sub-images, mirrored: 160 samples per epoch."""
    from PIL import Image

    from lorakit.config.loader import load_config
    from lorakit.config.plan import build_plan, render_plan

    folder = tmp_path / "10_x"
    folder.mkdir()
    for i in range(2):
        Image.new("RGB", (512, 640), (i * 90, 20, 20)).save(folder / f"{i}.png")
    cfg = load_config(sets=[f"data.train_data_dir='{tmp_path}'", "data.image_size=[768, 512]",
                            "data.bucket_reso_steps=128", "data.min_bucket_reso=256", "data.sub_image_num=3",
                            "data.flip_aug=true"])
    plan = build_plan(cfg)
    assert plan.steps.samples_per_epoch == 160 and plan.steps.batches_per_epoch == 160
    assert any("2 images → 16 training images" in line and "= 160" in line for line in render_plan(plan))
    assert not any("buckets split" in n for n in plan.notes)


# -- warnings: what would make the run differ from what the folder suggests --------------------------------------
def plan_for(root: Path, *sets: str):
    return build_plan(resolve_layers(sets=[f'data.train_data_dir="{root}"', "data.resolution=64",
                                           "data.min_bucket_reso=64", *sets]).config)


def test_plan_warns_about_empty_caption_files_naming_the_first_few(tmp_path: Path) -> None:
    write_images(tmp_path / "1_x", 5, (64, 64))
    for i in range(4):
        (tmp_path / "1_x" / f"{i}.txt").write_text("" if i % 2 else "   \n", encoding="utf-8")
    (tmp_path / "1_x" / "4.txt").write_text("a cube", encoding="utf-8")
    plan = plan_for(tmp_path)
    names = ", ".join(str(tmp_path / "1_x" / f"{i}.txt") for i in range(3))
    assert plan.warnings == [
        f"4 caption file(s) are empty (0 bytes or only spaces), so their images train with no caption text of their "
        f"own: {names} … and 1 more — write the captions or delete the files"]
    assert f"warning: {plan.warnings[0]}" in render_plan(plan)


def test_plan_counts_caption_tokens_with_the_models_tokenizer(tmp_path: Path) -> None:
    """CLIP's BPE (random-sd15: the shipped vocabulary, no weights loaded): 'red' and ',' are a token each, so 60
    tags are 60 + 59 + start + end = 121 tokens, 44 beyond the 77 the text encoder reads."""
    write_images(tmp_path / "1_x", 3, (64, 64))
    (tmp_path / "1_x" / "0.txt").write_text(", ".join(["red"] * 60), encoding="utf-8")
    (tmp_path / "1_x" / "1.txt").write_text(", ".join(["red"] * 40), encoding="utf-8")  # 81 tokens: 4 cut
    (tmp_path / "1_x" / "2.txt").write_text("a red cube", encoding="utf-8")
    plan = plan_for(tmp_path, 'model.pretrained_model_name_or_path="random-sd15"')
    assert plan.warnings == [
        f"2 caption(s) are longer than the text encoder reads (77 tokens, start and end included), so their ends "
        f"are cut off in training; the longest, of {tmp_path / '1_x' / '0.png'}, has 121 tokens (44 cut) — "
        f"shorten them, most important words first"]


def test_plan_caption_tokens_of_the_tiny_model_and_the_trigger_word(tmp_path: Path) -> None:
    """The tiny tokenizer reads single characters (32 with start and end); the trigger word counts too."""
    write_images(tmp_path / "1_x", 2, (64, 64))
    (tmp_path / "1_x" / "0.txt").write_text("a" * 25, encoding="utf-8")  # zkz, + 25 a: 3 + 1 + 25 + 2 = 31
    (tmp_path / "1_x" / "1.txt").write_text("b" * 28, encoding="utf-8")  # 3 + 1 + 28 + 2 = 34: 2 cut
    plan = plan_for(tmp_path, 'data.trigger_word="zkz"')
    assert len(plan.warnings) == 1
    assert plan.warnings[0].startswith("1 caption(s) are longer than the text encoder reads (32 tokens")
    assert f"of {tmp_path / '1_x' / '1.png'}, has 34 tokens (2 cut)" in plan.warnings[0]


def test_plan_says_when_caption_lengths_cannot_be_checked(tmp_path: Path) -> None:
    write_images(tmp_path / "1_x", 1, (64, 64))
    (tmp_path / "1_x" / "0.txt").write_text("a cube", encoding="utf-8")
    plan = plan_for(tmp_path, f'model.pretrained_model_name_or_path="{tmp_path / "nope"}"')
    assert plan.warnings == [f"caption lengths not checked: no tokenizer for {tmp_path / 'nope'} "
                             f"(model not found: {tmp_path / 'nope'})"]


def test_plan_warns_about_heavily_cropped_images(tmp_path: Path) -> None:
    write_images(tmp_path / "1_x", 1, (64, 64))
    from PIL import Image

    Image.new("RGB", (384, 64)).save(tmp_path / "1_x" / "pano.png")  # 6:1 in a 2:1 bucket: 67 % cut
    plan = plan_for(tmp_path, "data.image_size=[128, 128]", "data.max_aspect_ratio=2.0")
    assert plan.warnings == [
        f"1 image(s) lose a fifth or more of their area to cropping: their aspect ratio is far outside the buckets' "
        f"range (widest 128×64, tallest 64×128): {tmp_path / '1_x' / 'pano.png'} (384×64 → 128×64, 67 % cut)"
        f" — crop them yourself to keep what matters, or widen the bucket range (data.max_aspect_ratio, "
        f"data.min_bucket_reso)"]
    # sd-scripts' make_bucket_resolutions((128, 128), 64, 1024, 64): widths 64…256 (16384 // w // 64 × 64 ≥ 64);
    # 384/64 = 6 is nearest 256/64 = 4 → 384 × 64 cut to 256 × 64 (33 %); max_aspect_ratio does not apply
    plan = plan_for(tmp_path, "data.image_size=[128, 128]", "data.bucket_mode='kohya'")
    assert "(widest 256×64, tallest 64×256)" in plan.warnings[0] and "(384×64 → 256×64, 33 % cut)" in \
        plan.warnings[0] and plan.warnings[0].endswith("(data.min_bucket_reso, data.max_bucket_reso)")
    plan = plan_for(tmp_path, "data.enable_bucket=false")
    assert plan.warnings[0].startswith("1 image(s) lose a fifth or more of their area to cropping: buckets are off "
                                       "(data.enable_bucket = false), so every image is cropped to 64×64: ")
    assert "(384×64 → 64×64, 83 % cut)" in plan.warnings[0]
    assert plan.warnings[0].endswith("or set data.enable_bucket = true")


def test_plan_names_symlinks_it_skips_and_oversized_images(tmp_path: Path) -> None:
    import os
    import struct
    import zlib

    write_images(tmp_path / "1_x", 1, (64, 64))
    os.symlink(tmp_path, tmp_path / "1_x" / "2_loop")

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    big = tmp_path / "1_x" / "big.png"  # 12000 × 12000 = 144 MP: Pillow opens it with a warning
    big.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 12000, 12000, 8, 2, 0, 0, 0))
                    + chunk(b"IEND", b""))
    lines = render_plan(plan_for(tmp_path))
    assert (f"warning: {tmp_path / '1_x' / '2_loop'} links to {tmp_path}, which is scanned already; skipped (each "
            "folder is used once)") in lines
    assert (f"warning: 1 image(s) are above Pillow's decompression-bomb limit (89 MP) and are decoded at full size "
            f"every time they are loaded: {big} (12000×12000, 144 MP) — shrink them, e.g. `lorakit prepare "
            f"<folder> --out <new folder> --max-side 4096`") in lines


def test_plan_lists_adapted_modules_per_block(tmp_path: Path) -> None:
    """tiny-sd1 (CLIP of 2 layers): IN04 and OUT05 cross-attention = 4 projections each; the text encoder's
    attention (q/k/v/out) and MLP (fc1/fc2) in both layers = 12, as kohya's CLIPAttention + CLIPMLP; block_dims
    would be per block, here network_dim/alpha everywhere."""
    write_images(tmp_path / "img" / "1_x", 1, (64, 64))
    r = resolve_layers(sets=[f'data.train_data_dir="{tmp_path / "img"}"', "data.resolution=64",
                             "network.blocks=['IN04', 'OUT05', 'BASE']", "network.network_element='cross_attention'",
                             "network.train_text_encoder=true", "network.network_dim=4", "network.network_alpha=2"])
    lines = render_plan(build_plan(r.config))
    start = lines.index("network: lora, 20 modules adapted (component, block, modules, rank/alpha):")
    assert lines[start + 1:start + 4] == ["  unet            IN04       4  4/2",
                                          "  unet            OUT05      4  4/2",
                                          "  text_encoder    BASE      12  4/2"]


def test_plan_warns_when_the_selection_does_not_fit_the_model(tmp_path: Path) -> None:
    write_images(tmp_path / "img" / "1_x", 1, (64, 64))
    sets = [f'data.train_data_dir="{tmp_path / "img"}"', "data.resolution=64",
            "model.pretrained_model_name_or_path='tiny-sdxl'", "network.blocks=['OUT11']"]
    with pytest.raises(ConfigError, match="network.blocks: OUT11: not a block of sdxl"):
        resolve_layers(sets=sets)  # config validate refuses it
    cfg = LorakitConfig.model_validate(merged_values(build_layers(sets=sets)))  # a config built without checks
    plan = build_plan(cfg)
    assert plan.network == []
    assert any("network modules not listed" in w and "OUT11: not a block of sdxl" in w for w in plan.warnings)


def test_plan_warns_which_modules_sd_scripts_would_ignore(tmp_path: Path) -> None:
    """conv_in sits outside sd-scripts' target classes: it is adapted, listed, and named in a warning with the
    count of the file's modules (tiny-sd1's to_q layers + conv_in); ComfyUI and A1111 load it all."""
    write_images(tmp_path / "img" / "1_x", 1, (64, 64))
    plan = plan_for(tmp_path / "img", "network.target_modules=['to_q', 'conv_in']")
    unet = load_model(ModelSection(pretrained_model_name_or_path="tiny-sd1")).unet
    total = 1 + sum(1 for name, _ in unet.named_modules() if name.endswith(".to_q"))  # conv_in + every to_q
    assert plan.network[0] == f"network: lora, {total} modules adapted (component, block, modules, rank/alpha):"
    assert f"warning: sd-scripts ignores 1 of {total} modules: lora_unet_conv_in — sd-scripts builds LoRA modules " \
           "only inside the UNet's transformer, resnet and sampler blocks and CLIP's attention/MLP, and drops the " \
           "rest without a message; leave them out of network.target_modules" in render_plan(plan)
    assert not any("ComfyUI" in w or "A1111" in w for w in plan.warnings)
    assert not any("ignores" in w for w in plan_for(tmp_path / "img", "network.target_modules=['to_q']").warnings)


def test_plan_names_the_checkpoint_schedule() -> None:
    from lorakit.config.plan import checkpoint_line
    from lorakit.config.schema import LorakitConfig

    cfg = LorakitConfig.model_validate({"checkpoint": {"every_n_steps": 100, "keep_last": 3}})
    assert checkpoint_line(cfg, 450) == ("checkpoints (for --resume): every 100 steps (4 here), at the end; "
                                         "the last 3 kept; also on a stop")
    off = LorakitConfig.model_validate({"checkpoint": {"every_n_steps": 0, "at_end": False, "every_n_epochs": 2}})
    assert checkpoint_line(off, 450) == "checkpoints (for --resume): every 2 epochs; the last 2 kept; also on a stop"
    none = LorakitConfig.model_validate({"checkpoint": {"every_n_steps": 0, "at_end": False}})
    assert checkpoint_line(none, 450) == "checkpoints (for --resume): only on a stop; the last 2 kept"


def test_epoch_saves_are_in_the_plan() -> None:
    # 30 images, batch 1: 30 steps per epoch; max_train_steps 100 runs into epoch 4. sd-scripts saves after each
    # epoch but the last (train_network.py: (epoch + 1) % save_every_n_epochs == 0 and epoch + 1 < epochs)
    s = compute_steps([(30, 1, False)], 1, 1, 1, 100, save_every_epochs=1, save_every=40)
    assert s.save_steps == (30, 40, 60, 80, 90)
