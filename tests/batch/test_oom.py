"""lorakit.batch.oom: telling a GPU out-of-memory from other failures, and the retry ladder of lighter settings.

The OOM texts are the exact words torch, CUDA, ROCm and Apple's MPS print (each cited from a public report); the
ladder's values are computed here by its rules (effective batch = train_batch_size × gradient_accumulation_steps as
sd-scripts' train_network.py `total_batch_size`; sides × 3/4 in multiples of 64, no lower than half), and every
attempt is resolved by the real config loader.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from lorakit.batch.oom import OomStep, attempt_sets, is_host_oom, is_oom, ladder, looks_killed, lower_sizes
from lorakit.config.loader import resolve_layers
from lorakit.config.presets import OOM_PRESET, preset_path
from lorakit.config.schema import LorakitConfig
from lorakit.errors import EXIT_INPUT, EXIT_NONFINITE, EXIT_OOM

# torch ≥ 2.5 (CUDACachingAllocator): pytorch/pytorch#16417 (2024 comment), antgroup/echomimic_v2#115
TORCH_OOM = ("torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 22.00 MiB. GPU 0 has a total capacity "
             "of 23.65 GiB of which 11.06 MiB is free.")
# torch 1.13–2.4: fudan-generative-vision/hallo#143, One-2-3-45/One-2-3-45#25
TORCH_CUDA_OOM = ("torch.cuda.OutOfMemoryError: CUDA out of memory. Tried to allocate 1.69 GiB (GPU 0; 14.56 GiB "
                  "total capacity; 649.97 MiB already allocated)")
# torch < 1.13, a plain RuntimeError: singhsourabh/Resume-NER#4
RUNTIME_CUDA_OOM = "RuntimeError: CUDA out of memory. Tried to allocate 92.00 MiB (GPU 0; 1.96 GiB total capacity"
# ROCm builds: ROCm/TheRock#1054, huggingface/autotrain-advanced#737
HIP_OOM = "torch.OutOfMemoryError: HIP out of memory. Tried to allocate 124.00 MiB. GPU 0 has a total capacity"
# Intel GPUs: intel/torch-xpu-ops#3011
XPU_OOM = "torch.OutOfMemoryError: XPU out of memory. Tried to allocate 4.66 GiB. GPU 0 has a total capacity"
# Apple MPS (a RuntimeError without "CUDA"): Comfy-Org/ComfyUI#2489, lllyasviel/Fooocus#1139
MPS_OOM = ("RuntimeError: MPS backend out of memory (MPS allocated: 5.56 GB, other allocations: 1.10 GB, max "
           "allowed: 6.80 GB). Tried to allocate 768.00 MB on private pool.")
# the CUDA runtime's cudaErrorMemoryAllocation (context creation, a kernel's workspace): taohan10200/IIM#28,
# kijai/ComfyUI-WanVideoWrapper#565
CUDA_ERROR_OOM = ("RuntimeError: CUDA error: out of memory\nCUDA kernel errors might be asynchronously reported at "
                  "some other API call, so the stacktrace below might be incorrect.")
# cuBLAS / cuDNN handles that cannot be allocated on a full card: DeepMotionAIResearch/DenseMatchingBenchmark#20,
# QwenLM/Qwen3#873 (fixed by more free memory); KupynOrest/DeblurGAN#128, amdegroot/ssd.pytorch#33 (fixed by a
# smaller batch)
CUBLAS_OOM = "RuntimeError: CUDA error: CUBLAS_STATUS_ALLOC_FAILED when calling `cublasCreate(handle)`"
CUDNN_OOM = "RuntimeError: cuDNN error: CUDNN_STATUS_ALLOC_FAILED"
# lorakit's own fault injection raises the allocator's words (src/lorakit/engine/faults.py)
LORAKIT_FAULT = "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 20.00 MiB (lorakit fault injection"
# host RAM (c10/core/impl/alloc_cpu.cpp): mxfold/mxfold2#20 (Linux), MaximeVandegar/Papers-in-100-Lines-of-Code#10
# (Windows)
CPU_OOM = ("RuntimeError: [enforce fail at alloc_cpu.cpp:75] err == 0. DefaultCPUAllocator: can't allocate memory: "
           "you tried to allocate 132426121216 bytes. Error code 12 (Cannot allocate memory)")
CPU_OOM_WINDOWS = "DefaultCPUAllocator: not enough memory: you tried to allocate 1981808640 bytes."
# a cuDNN failure that is no OOM: MCG-NKU/E2FGVI#45
CUDNN_EXECUTION = "RuntimeError: cuDNN error: CUDNN_STATUS_EXECUTION_FAILED"


def traceback(last_line: str) -> str:
    return f'Traceback (most recent call last):\n  File "train.py", line 1, in <module>\n    main()\n{last_line}\n'


@pytest.mark.parametrize("text", [TORCH_OOM, TORCH_CUDA_OOM, RUNTIME_CUDA_OOM, HIP_OOM, XPU_OOM, MPS_OOM,
                                  CUDA_ERROR_OOM, CUBLAS_OOM, CUDNN_OOM, LORAKIT_FAULT])
def test_gpu_oom_texts_count_after_a_crash(text: str) -> None:
    output = "loading model\nsteps:  10%|#   | 5/50\n" + traceback(text)
    assert is_oom(1, output)
    assert is_oom(None, output)  # no status known (the child was lost): the text decides
    assert is_oom(1, text)  # a C++ abort or a logger prints no traceback


@pytest.mark.parametrize("text", [CPU_OOM, CPU_OOM_WINDOWS, CUDNN_EXECUTION, "RuntimeError: shape mismatch",
                                  "ValueError: out of range"])
def test_other_failures_are_not_gpu_oom(text: str) -> None:
    assert not is_oom(1, traceback(text))


def test_host_ram_is_reported_apart() -> None:
    assert is_host_oom(traceback(CPU_OOM)) and is_host_oom(CPU_OOM_WINDOWS)
    assert not is_host_oom(traceback(TORCH_OOM))


def test_exit_status_five_is_oom_whatever_the_text() -> None:
    assert EXIT_OOM == 5
    assert is_oom(EXIT_OOM, "")
    assert not is_oom(0, traceback(TORCH_OOM))  # it finished


def test_killed_is_not_gpu_oom() -> None:
    for code in (137, -9):
        assert looks_killed(code) and not is_oom(code, "steps:  40%|####  | 20/50\n")
    assert not looks_killed(1) and not looks_killed(None) and not looks_killed(EXIT_OOM)


def test_a_handled_oom_earlier_does_not_label_a_later_crash() -> None:
    warning = f"warning: samples at step 10 failed (OutOfMemoryError: {TORCH_OOM}); training goes on\n"
    assert not is_oom(1, warning + traceback("KeyError: 'text_encoder'"))
    assert not is_oom(EXIT_NONFINITE, warning + "error: too many NaN steps in a row")  # lorakit named the cause
    assert is_oom(EXIT_INPUT, traceback(TORCH_OOM))  # an input error status with an OOM traceback: still one


def test_an_oom_that_caused_the_last_exception_counts() -> None:
    # Python's chained report: the OOM, then a failure while handling it (as Wan2GP#1083 shows)
    chained = (traceback(CUDA_ERROR_OOM) + "\nDuring handling of the above exception, another exception occurred:\n\n"
               + traceback("RuntimeError: cannot unload"))
    assert is_oom(1, chained)
    separate = traceback(TORCH_OOM) + "retrying\n" + traceback("RuntimeError: cannot unload")
    assert not is_oom(1, separate)


# -- the ladder --------------------------------------------------------------------------------------------------

def heavy(**train: object) -> dict:
    values = {"train_batch_size": 8, "gradient_accumulation_steps": 2, "gradient_checkpointing": False,
              "cache_latents": False, "optimizer_type": "AdamW"} | train
    return {"train": values, "data": {"resolution": 1024}}


def write_toml(path: Path, sections: dict) -> Path:
    def literal(v: object) -> str:
        if isinstance(v, bool):
            return str(v).lower()
        if isinstance(v, str):
            return f'"{v}"'
        if isinstance(v, (list, tuple)):
            return "[" + ", ".join(literal(x) for x in v) + "]"
        return str(v)

    lines = []
    for section, values in sections.items():
        lines.append(f"[{section}]")
        lines += [f"{k} = {literal(v)}" for k, v in values.items()]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def user_oom_layer(tmp_path: Path, **train: object) -> Path:
    return write_toml(tmp_path / "outofmemory.toml", {"train": train or {"mixed_precision": "fp16"}})


def resolved(config_file: Path, steps: list[OomStep], attempt: int) -> LorakitConfig:
    layers, sets = attempt_sets(steps, attempt)
    return resolve_layers(files=[config_file, *layers], sets=sets).config


def test_user_layer_first_then_every_rung_keeps_the_effective_batch(tmp_path: Path) -> None:
    cfg_file = write_toml(tmp_path / "run.toml", heavy())
    layer = user_oom_layer(tmp_path)
    steps = ladder(resolve_layers(files=[cfg_file]).config, layer, bnb_available=True)
    assert steps[0].layer == layer and steps[0].sets == ()
    assert all(s.layer is None for s in steps[1:])
    # 8 × 2 images per update: 4 × 4, 2 × 8, 1 × 16; 1024 × 3/4 = 768, × 3/4 = 576, then 432 < 1024 / 2 → 512
    expected = [  # (checkpointing, cache, batch, accumulation, optimizer, resolution) after each attempt
        (False, False, 8, 2, "AdamW", 1024),
        (True, False, 8, 2, "AdamW", 1024),
        (True, True, 8, 2, "AdamW", 1024),
        (True, True, 4, 4, "AdamW", 1024),
        (True, True, 2, 8, "AdamW", 1024),
        (True, True, 1, 16, "AdamW", 1024),
        (True, True, 1, 16, "AdamW8bit", 1024),
        (True, True, 1, 16, "AdamW8bit", 768),
        (True, True, 1, 16, "AdamW8bit", 576),
        (True, True, 1, 16, "AdamW8bit", 512),
    ]
    assert len(steps) == len(expected)
    for attempt, want in enumerate(expected, start=1):
        c = resolved(cfg_file, steps, attempt)
        t = c.train
        got = (t.gradient_checkpointing, t.cache_latents, t.train_batch_size, t.gradient_accumulation_steps,
               t.optimizer_type, c.data.resolution)
        assert got == want, f"attempt {attempt}"
        assert t.mixed_precision == "fp16"  # the user's layer stays under every later rung
        assert t.train_batch_size * t.gradient_accumulation_steps == 8 * 2
    with pytest.raises(IndexError):
        attempt_sets(steps, len(steps) + 1)
    with pytest.raises(IndexError):
        attempt_sets(steps, 0)


def test_odd_batch_keeps_the_images_per_update_exactly(tmp_path: Path) -> None:
    cfg_file = write_toml(tmp_path / "run.toml", heavy(train_batch_size=6, gradient_accumulation_steps=1))
    steps = ladder(resolve_layers(files=[cfg_file]).config, user_oom_layer(tmp_path), bnb_available=False)
    batches = []
    for attempt in range(1, len(steps) + 1):
        t = resolved(cfg_file, steps, attempt).train
        assert t.train_batch_size * t.gradient_accumulation_steps == 6
        assert t.optimizer_type == "AdamW"  # no bitsandbytes: no 8-bit rung
        batches.append(t.train_batch_size)
    assert sorted(set(batches), reverse=True) == [6, 3, 1]  # 6 → 3 (accumulate 2) → 1 (accumulate 6)


def test_rungs_start_from_what_the_layer_set(tmp_path: Path) -> None:
    cfg_file = write_toml(tmp_path / "run.toml", heavy())
    layer = user_oom_layer(tmp_path, train_batch_size=2, gradient_checkpointing=True)
    steps = ladder(resolve_layers(files=[cfg_file]).config, layer, bnb_available=False)
    assert not any("gradient_checkpointing" in s for step in steps for s in step.sets)  # the layer turned it on
    assert resolved(cfg_file, steps, 1).train.train_batch_size == 2
    batch_rungs = [step for step in steps if any("train_batch_size" in s for s in step.sets)]
    assert len(batch_rungs) == 1  # 2 → 1 only
    last = resolved(cfg_file, steps, len(steps)).train
    assert (last.train_batch_size, last.gradient_accumulation_steps) == (1, 2 * 2)  # 2 × 2 per update, as attempt 1


def test_an_already_light_config_has_only_the_layer(tmp_path: Path) -> None:
    light = {"train": {"train_batch_size": 1, "gradient_checkpointing": True, "cache_latents": True,
                       "optimizer_type": "AdamW8bit"}, "data": {"resolution": 256}}
    config = resolve_layers(files=[write_toml(tmp_path / "run.toml", light)]).config
    steps = ladder(config, user_oom_layer(tmp_path), bnb_available=True)
    assert [s.name for s in steps] == ["oom-layer"]


def test_shipped_preset_when_no_user_layer(tmp_path: Path) -> None:
    cfg_file = write_toml(tmp_path / "run.toml", heavy(train_batch_size=1, gradient_accumulation_steps=1))
    steps = ladder(resolve_layers(files=[cfg_file]).config, None, bnb_available=True)
    assert steps[0].layer == preset_path(OOM_PRESET)
    first = resolved(cfg_file, steps, 1).train
    assert first.gradient_checkpointing  # what the shipped preset sets
    assert not any("gradient_checkpointing" in s for step in steps for s in step.sets)


def test_per_use_augmentation_keeps_latents_uncached(tmp_path: Path) -> None:
    run = heavy(train_batch_size=1, gradient_accumulation_steps=1)
    run["data"]["color_aug"] = True  # sd-scripts refuses cached latents with color_aug (train_network.py)
    cfg_file = write_toml(tmp_path / "run.toml", run)
    steps = ladder(resolve_layers(files=[cfg_file]).config, user_oom_layer(tmp_path), bnb_available=True)
    assert not any("cache_latents" in s for step in steps for s in step.sets)
    assert not resolved(cfg_file, steps, len(steps)).train.cache_latents  # and the config stays valid


def test_image_size_is_lowered_instead_of_resolution(tmp_path: Path) -> None:
    run = heavy(train_batch_size=1, gradient_accumulation_steps=1, gradient_checkpointing=True, cache_latents=True)
    run["data"] = {"image_size": [1024, 768]}
    cfg_file = write_toml(tmp_path / "run.toml", run)
    steps = ladder(resolve_layers(files=[cfg_file]).config, user_oom_layer(tmp_path), bnb_available=False)
    # short side 768, floor 768 / 2 = 384: (768, 576), then 576 × 3/4 = 432 → 384 in 64s: (576, 384)
    sizes = [resolved(cfg_file, steps, n).data.image_size for n in range(2, len(steps) + 1)]
    assert sizes == [(768, 576), (576, 384)]


@pytest.mark.parametrize("size, step, want", [
    ((1024, 1024), 64, [(768, 768), (576, 576), (512, 512)]),  # SDXL: no lower than 512
    ((512, 512), 64, [(384, 384), (256, 256)]),  # SD 1.x: 512 × 3/4 = 384, 288 → 256 in 64s
    ((768, 768), 64, [(576, 576), (384, 384)]),  # SD 2.x 768-v: 432 → 384
    ((1024, 1024), 128, [(768, 768), (512, 512)]),  # bucket step 128: 576 → 512
    ((256, 256), 64, []),
])
def test_lower_sizes(size: tuple[int, int], step: int, want: list[tuple[int, int]]) -> None:
    got = lower_sizes(size, step)
    assert got == want
    assert all(side % step == 0 and side % 64 == 0 for s in got for side in s)
