"""ComfyUI nodes that train through lorakit's job queue: training runs in lorakit's runner process, never in ComfyUI's.

Nothing from ComfyUI (folder_paths, comfy.*) or torch is imported at module level: ComfyUI provides those modules
only inside its own process, and the tests stand them in. Node conventions (INPUT_TYPES / RETURN_TYPES / FUNCTION /
CATEGORY / IS_CHANGED / OUTPUT_NODE) follow ComfyUI's nodes.py (LoraLoader, CheckpointLoaderSimple).
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path
from typing import Any

CATEGORY = "lorakit"
NO_PRESET = "(none)"
SAVED = " (saved)"  # the user's own presets in the preset menu
CHECKPOINT_VAE = "(checkpoint's own)"
FROM_MODEL = "(the linked MODEL's checkpoint)"
MODES = ["lora", "ileco", "difference"]
NETWORKS = ["lora", "locon", "loha", "lokr"]
FAILED_STATES = ("failed", "stopped", "cancelled")


def _lorakit():
    """Import lorakit; a linked package (integrations/comfyui in a checkout) falls back to the checkout's src/."""
    try:
        import lorakit  # noqa: F401
    except ImportError:
        src = Path(__file__).resolve().parents[2] / "src"
        if not (src / "lorakit").is_dir():
            raise RuntimeError("lorakit is not installed in ComfyUI's Python: run `python -m pip install lorakit` "
                               "with the Python that runs ComfyUI, then restart ComfyUI") from None
        sys.path.insert(0, str(src))
        # the queue runner is a child of this process (sys.executable -m lorakit.cli): it needs the same path
        os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, (str(src), os.environ.get("PYTHONPATH"))))
    from lorakit.jobs import runner, store

    return runner, store


def _store():
    """The queue of the lorakit home ($LORAKIT_HOME, else ~/.lorakit) — the one `lorakit queue` and the UI use."""
    _, store = _lorakit()
    return store.JobStore(None)


def _preset_names() -> list[str]:
    """lorakit's shipped presets, then the user's own (`<home>/presets/*.toml`: saved from the web UI, or TrainTrain
    presets imported there with `lorakit config import`) as "<name> (saved)"."""
    try:
        _lorakit()
        from lorakit.config.presets import list_presets, saved_presets

        return [NO_PRESET, *list_presets(), *(f"{p.stem}{SAVED}" for p in saved_presets(_store().home))]
    except Exception:  # noqa: BLE001 - the node list must still load; queueing then names the problem
        return [NO_PRESET]


def _preset_layers(preset: str, home: Path) -> tuple[str | None, list[str]]:
    """(shipped preset name, config files) of the preset menu's choice."""
    if preset == NO_PRESET:
        return None, []
    if preset.endswith(SAVED):
        from lorakit.config.presets import user_presets_dir

        path = user_presets_dir(home) / f"{preset.removesuffix(SAVED)}.toml"
        if not path.is_file():
            raise ValueError(f"lorakit: preset {preset!r}: {path} is gone; refresh ComfyUI (R) and choose again")
        return None, [str(path)]
    return preset, []


def start_runner(home: Path) -> None:
    """A detached queue runner that outlives ComfyUI (lorakit.jobs.runner.ensure_runner, as the web UI starts it)."""
    runner, _ = _lorakit()
    runner.ensure_runner(home)


def _toml_string(text: str) -> str:
    """A --set value kept as a string whatever it looks like (a JSON string is a valid TOML basic string)."""
    return json.dumps(text)


def _free_comfy_models() -> None:
    """Unload ComfyUI's models and return the cached VRAM: the trainer is another process and would otherwise share
    the GPU with them silently."""
    import comfy.model_management as mm

    mm.unload_all_models()
    mm.soft_empty_cache()


def _job(job_id: int):
    from lorakit.errors import LorakitError

    try:
        return _store().get(int(job_id))
    except LorakitError as exc:
        raise ValueError(f"lorakit: {exc}") from None


class LorakitTrainLoRA:
    """Queue a lorakit training job on a ComfyUI checkpoint; outputs the job id."""

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        import folder_paths

        return {
            "required": {
                "ckpt_name": ([FROM_MODEL, *folder_paths.get_filename_list("checkpoints")], {
                    "tooltip": "the checkpoint to train on; the first entry takes the one the linked MODEL was "
                               "loaded from (as TrainTrain uses the loaded model)"}),
                "mode": (MODES, {"default": "lora"}),
                "network": (NETWORKS, {"default": "lora"}),
                "dataset_folder": ("STRING", {"default": "", "tooltip": "lora: the folder of training images"}),
                "original_prompt": ("STRING", {"default": "", "tooltip": "ileco: the concept to edit; "
                                                                         "difference: the caption of both images"}),
                "target_prompt": ("STRING", {"default": "", "tooltip": "ileco: what it becomes (empty = erase)"}),
                "rank": ("INT", {"default": 16, "min": 1, "max": 1024}),
                "alpha": ("FLOAT", {"default": 8.0, "min": 0.01, "max": 1024.0, "step": 0.01}),
                "learning_rate": ("FLOAT", {"default": 1e-4, "min": 0.0, "max": 1.0, "step": 1e-6, "round": False}),
                "steps": ("INT", {"default": 500, "min": 1, "max": 1_000_000}),
                "resolution": ("INT", {"default": 512, "min": 64, "max": 4096, "step": 64}),
                "preset": (_preset_names(), {"default": NO_PRESET}),
                "output_name": ("STRING", {"default": "comfy-lora"}),
                "free_comfy_models": ("BOOLEAN", {"default": True}),
            },
            "optional": {
                "model": ("MODEL", {"tooltip": "with ckpt_name's first entry: train on this model's checkpoint"}),
                "vae_name": ([CHECKPOINT_VAE, *folder_paths.get_filename_list("vae")], {"default": CHECKPOINT_VAE}),
                "original_image": ("IMAGE", {"tooltip": "difference: the 'before' image (e.g. from Load Image)"}),
                "target_image": ("IMAGE", {"tooltip": "difference: the 'after' image, the same size"}),
            },
        }

    RETURN_TYPES = ("INT",)
    RETURN_NAMES = ("job_id",)
    FUNCTION = "train"
    CATEGORY = CATEGORY
    OUTPUT_NODE = True  # runs even when nothing is linked to its output

    def train(self, ckpt_name: str, mode: str, network: str, dataset_folder: str, original_prompt: str,
              target_prompt: str, rank: int, alpha: float, learning_rate: float, steps: int, resolution: int,
              preset: str, output_name: str, free_comfy_models: bool, model: Any = None,
              vae_name: str = CHECKPOINT_VAE, original_image: Any = None, target_image: Any = None) -> tuple[int]:
        import folder_paths

        runner, _ = _lorakit()
        from lorakit.errors import LorakitError

        _check_mode_inputs(mode, dataset_folder, original_prompt, target_prompt, original_image, target_image)
        if ckpt_name == FROM_MODEL:
            checkpoint = checkpoint_of(model)
        elif model is not None:  # two answers to "which model": never pick one silently
            raise ValueError(f"lorakit: a MODEL is linked and ckpt_name names {ckpt_name!r}: choose "
                             f"{FROM_MODEL!r} to train on the linked model, or unlink it")
        else:
            checkpoint = folder_paths.get_full_path("checkpoints", ckpt_name)
            if checkpoint is None:
                raise ValueError(f"lorakit: checkpoint {ckpt_name!r} is not in ComfyUI's models/checkpoints folders")
        store = _store()
        sets = [f"model.pretrained_model_name_or_path={_toml_string(checkpoint)}",
                "model.family=\"auto\"",  # the chosen checkpoint decides, not the preset's family
                f"mode.type={_toml_string(mode)}", f"network.network_module={_toml_string(network)}",
                f"network.network_dim={int(rank)}", f"network.network_alpha={float(alpha)!r}",
                f"train.learning_rate={float(learning_rate)!r}", f"train.max_train_steps={int(steps)}",
                f"data.resolution={int(resolution)}", f"output.output_name={_toml_string(output_name)}",
                # an absolute folder: the runner's working directory is wherever it was started
                f"output.output_dir={_toml_string(str(store.home / 'comfyui-runs'))}"]
        if vae_name and vae_name != CHECKPOINT_VAE:
            vae = folder_paths.get_full_path("vae", vae_name)
            if vae is None:
                raise ValueError(f"lorakit: VAE {vae_name!r} is not in ComfyUI's models/vae folders")
            sets.append(f"model.vae={_toml_string(vae)}")
        if mode == "lora":
            sets.append(f"data.train_data_dir={_toml_string(dataset_folder)}")
        elif mode == "ileco":
            sets += [f"mode.original_prompt={_toml_string(original_prompt)}",
                     f"mode.target_prompt={_toml_string(target_prompt)}"]
        else:
            inputs = store.home / "comfyui-inputs"
            sets += [f"mode.original_image={_toml_string(str(save_image(original_image, inputs, 'original_image')))}",
                     f"mode.target_image={_toml_string(str(save_image(target_image, inputs, 'target_image')))}",
                     f"mode.prompt={_toml_string(original_prompt)}"]
        try:
            shipped, files = _preset_layers(preset, store.home)
            job = runner.add_job(store, files=files, preset=shipped, sets=sets)
        except LorakitError as exc:  # ComfyUI shows the message as the node's error
            raise ValueError(f"lorakit could not queue the job: {exc}") from None
        if free_comfy_models:  # only once the job is queued: a refused one leaves ComfyUI's models loaded
            _free_comfy_models()
        start_runner(store.home)
        return (job.id,)


def _check_mode_inputs(mode: str, dataset_folder: str, original_prompt: str, target_prompt: str,
                       original_image: Any, target_image: Any) -> None:
    """Each mode reads its own inputs; one the mode would not read is refused, never dropped silently."""
    unread = {"lora": {"original_prompt": original_prompt, "target_prompt": target_prompt,
                       "original_image": original_image, "target_image": target_image},
              "ileco": {"dataset_folder": dataset_folder, "original_image": original_image,
                        "target_image": target_image},
              "difference": {"dataset_folder": dataset_folder, "target_prompt": target_prompt}}[mode]
    given = [name for name, value in unread.items() if value is not None and value != ""]
    if given:
        raise ValueError(f"lorakit: mode {mode} does not read {', '.join(given)}: clear or unlink it")
    if mode == "difference" and (original_image is None or target_image is None):
        raise ValueError("lorakit: mode difference needs original_image and target_image linked (e.g. two "
                         "Load Image nodes)")


def checkpoint_of(model: Any) -> str:
    """The checkpoint file a MODEL was loaded from. ComfyUI's loaders record how to rebuild a model in
    `ModelPatcher.cached_patcher_init = (loader, (path, …))` (recent ComfyUI; kept by clone()); a MODEL with weight
    patches (a LoRA applied) is refused, since lorakit trains on the file alone."""
    import folder_paths

    if model is None:
        raise ValueError(f"lorakit: ckpt_name is {FROM_MODEL!r} but no MODEL is linked: link one (e.g. from Load "
                         "Checkpoint) or choose a checkpoint")
    init = getattr(model, "cached_patcher_init", None)
    args = init[1] if isinstance(init, (tuple, list)) and len(init) > 1 and isinstance(init[1], (tuple, list)) \
        else ()
    path = next((a for a in args if isinstance(a, str) and os.path.isfile(a)), None)
    if path is None:
        raise ValueError("lorakit: the linked MODEL does not say which file it was loaded from (an older ComfyUI, "
                         "or a model built by another node): choose its checkpoint in ckpt_name")
    roots = [Path(p).resolve() for p in folder_paths.get_folder_paths("checkpoints")]
    if not any(Path(path).resolve().is_relative_to(root) for root in roots):
        raise ValueError(f"lorakit: the linked MODEL was loaded from {path}, not from models/checkpoints (lorakit "
                         "trains on a whole checkpoint: UNet, text encoder and VAE): choose a checkpoint in ckpt_name")
    if getattr(model, "patches", None):
        raise ValueError("lorakit: the linked MODEL has weight patches applied (a LoRA?); lorakit would train on "
                         f"{Path(path).name} without them: link the Load Checkpoint's MODEL directly")
    return path


def save_image(image: Any, folder: Path, label: str) -> Path:
    """A ComfyUI IMAGE (a [batch, height, width, channels] tensor in 0..1) saved as a PNG named by its content, as
    ComfyUI's SaveImage turns a tensor into 8-bit pixels (255 × value, clipped, truncated)."""
    import io

    import numpy as np
    from PIL import Image

    if image is None or len(image.shape) != 4 or image.shape[0] != 1:
        raise ValueError(f"lorakit: {label} must be one image (a batch of 1), got "
                         f"{'nothing' if image is None else tuple(image.shape)}")
    pixels = np.clip(255.0 * image[0].cpu().numpy(), 0, 255).astype(np.uint8)
    data = io.BytesIO()
    Image.fromarray(pixels).save(data, format="PNG")
    path = folder / f"{hashlib.sha256(data.getvalue()).hexdigest()[:16]}.png"
    if not path.exists():
        from lorakit.io import atomic_path

        folder.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp:
            tmp.write_bytes(data.getvalue())
    return path


class _FollowsAJob:
    """A node about one queued job: its id as input, re-run by ComfyUI whenever the job moves on."""

    CATEGORY = CATEGORY

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"job_id": ("INT", {"default": 1, "min": 1})}}

    @classmethod
    def IS_CHANGED(cls, job_id: int | None = None, **_: Any) -> str | float:
        """ComfyUI re-runs a node when this value changes: the job's progress, not its (unchanged) id."""
        return _state_key(job_id)


class LorakitQueueStatus(_FollowsAJob):
    """A job's state, run folder and message as text."""

    RETURN_TYPES = ("STRING",)
    RETURN_NAMES = ("status",)
    FUNCTION = "status"

    def status(self, job_id: int) -> tuple[str]:
        job = _job(job_id)
        lines = [f"job {job.id} ({job.name}): {job.state}", f"run folder: {job.run_dir or '(not started)'}"]
        if job.message:
            lines.append(f"message: {job.message}")
        return ("\n".join(lines),)


def _state_key(job_id: int | None) -> str | float:
    """What IS_CHANGED returns: the job's state, so ComfyUI re-runs the node when the job moves on. A job_id linked
    from the Train node is not known yet when ComfyUI asks (it passes None for linked inputs): NaN, which never
    equals itself, makes ComfyUI run the node every time."""
    if job_id is None:
        return float("nan")
    try:
        job = _store().get(int(job_id))
    except Exception:  # noqa: BLE001 - the node itself reports the error when it runs
        return "missing"
    return f"{job.state}|{job.run_dir}|{job.message}"


class LorakitLoadTrainedLoRA(_FollowsAJob):
    """Copy a finished job's LoRA into ComfyUI's models/loras; outputs its file name (a LoraLoader's lora_name)."""

    RETURN_TYPES = ("STRING",)
    RETURN_NAMES = ("lora_name",)
    FUNCTION = "load"

    def load(self, job_id: int) -> tuple[str]:
        import folder_paths

        job = _job(job_id)
        if job.state in FAILED_STATES:
            raise RuntimeError(f"lorakit job {job.id} ({job.name}) {job.state}: {job.message or 'no message'}")
        if job.state != "done":
            raise RuntimeError(f"lorakit job {job.id} ({job.name}) is not finished yet (state {job.state}); "
                               "queue the workflow again when it is done")
        from lorakit.errors import LorakitError
        from lorakit.runs import final_lora, install_lora

        source = final_lora(Path(job.run_dir or ""))
        if source is None:
            raise RuntimeError(f"lorakit job {job.id} is done but {job.run_dir}/train holds no final .safetensors")
        if source.is_dir():
            raise RuntimeError(f"lorakit job {job.id} saved only the diffusers (peft) folder {source.name}; ComfyUI "
                               "loads the kohya .safetensors: train with output.save_format = \"kohya\" or \"both\"")
        folder = Path(folder_paths.get_folder_paths("loras")[0])
        folder.mkdir(parents=True, exist_ok=True)
        try:
            name = install_lora(source, folder)  # a content name: ComfyUI caches LoRAs by file name
        except LorakitError as exc:
            raise RuntimeError(f"lorakit: {exc}") from None
        return (name,)


class LorakitApplyTrainedLoRA(_FollowsAJob):
    """A finished job's LoRA applied to a MODEL and CLIP, as ComfyUI's LoraLoader applies a file from models/loras
    (comfy.utils.load_torch_file, then comfy.sd.load_lora_for_models): no file name to pick by hand. The file is
    installed in models/loras first, under its content name (the Load node's rule)."""

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        strength = {"default": 1.0, "min": -100.0, "max": 100.0, "step": 0.01}
        return {"required": {"model": ("MODEL",), "clip": ("CLIP",), **super().INPUT_TYPES()["required"],
                             "strength_model": ("FLOAT", dict(strength)), "strength_clip": ("FLOAT", dict(strength))}}

    RETURN_TYPES = ("MODEL", "CLIP", "STRING")
    RETURN_NAMES = ("model", "clip", "lora_name")
    FUNCTION = "apply"

    def apply(self, model: Any, clip: Any, job_id: int, strength_model: float,
              strength_clip: float) -> tuple[Any, Any, str]:
        import folder_paths

        (name,) = LorakitLoadTrainedLoRA().load(job_id)
        if strength_model == 0 and strength_clip == 0:  # LoraLoader's rule: nothing to apply
            return model, clip, name
        import comfy.sd
        import comfy.utils

        lora = comfy.utils.load_torch_file(folder_paths.get_full_path("loras", name), safe_load=True)
        model_lora, clip_lora = comfy.sd.load_lora_for_models(model, clip, lora, strength_model, strength_clip)
        return model_lora, clip_lora, name


NODE_CLASS_MAPPINGS = {
    "LorakitTrainLoRA": LorakitTrainLoRA,
    "LorakitQueueStatus": LorakitQueueStatus,
    "LorakitLoadTrainedLoRA": LorakitLoadTrainedLoRA,
    "LorakitApplyTrainedLoRA": LorakitApplyTrainedLoRA,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "LorakitTrainLoRA": "lorakit Train LoRA",
    "LorakitQueueStatus": "lorakit Queue status",
    "LorakitLoadTrainedLoRA": "lorakit Load trained LoRA",
    "LorakitApplyTrainedLoRA": "lorakit Apply trained LoRA",
}
