"""The ComfyUI renderer: the bench plan rendered by a running ComfyUI through the user's own API-format workflow.

Per image the workflow is patched (LoRA strengths = the weight, the seed, the prompts, batch size, SaveImage prefix),
submitted to `POST /prompt`, followed on `/ws` until it succeeds or fails, confirmed with `/history/<id>`, and its
images downloaded with `/view` into the bench's `images/` folder. Weight 0 sets both strengths to 0, which ComfyUI's
LoraLoader answers with the unpatched model: the base model's image.
"""

from __future__ import annotations

import io
import uuid
from pathlib import Path
from typing import Any

from ..errors import LorakitError
from ..io import atomic_path
from . import comfyui
from .plan import BenchPlan
from .render import Progress, Rendered, image_name


def workflow_settings(workflow: comfyui.Workflow) -> dict[str, Any]:
    """What the workflow renders with, as BenchPlan fields: prompt texts, sampler, steps, cfg, size, checkpoint."""
    sampler_id = comfyui.find_nodes(workflow, *comfyui.SAMPLERS)
    latent_id = comfyui.find_nodes(workflow, "EmptyLatentImage")
    settings: dict[str, Any] = {}
    if len(sampler_id) == 1:
        sampler = workflow[sampler_id[0]]["inputs"]
        settings.update(sampler=sampler.get("sampler_name"), schedule=sampler.get("scheduler"),
                        steps=sampler.get("steps"), cfg=sampler.get("cfg"))
        for side, key in (("positive", "prompt"), ("negative", "negative_prompt")):
            try:
                settings[key] = workflow[comfyui.text_node(workflow, sampler_id[0], side)]["inputs"].get("text")
            except LorakitError:
                pass
    if len(latent_id) == 1:
        settings.update(width=workflow[latent_id[0]]["inputs"].get("width"),
                        height=workflow[latent_id[0]]["inputs"].get("height"))
    ckpt = [workflow[i]["inputs"].get("ckpt_name") for i in comfyui.find_nodes(workflow, "CheckpointLoaderSimple")]
    settings["model"] = ckpt[0] if len(ckpt) == 1 and isinstance(ckpt[0], str) else ""
    return {k: v for k, v in settings.items() if v is not None}


def check_workflow(workflow: comfyui.Workflow) -> None:
    """Raise before anything is rendered if the workflow lacks a node the bench patches."""
    comfyui.patch_workflow(workflow, lora_name="x", strength_model=1.0, seed=0, positive="", negative="",
                           batch_size=1, filename_prefix="x")


def install_lora(lora: Path, folder: Path) -> str:
    """Copy `lora` into ComfyUI's LoRA folder under its content name (runs.install_lora) and return that name."""
    from ..runs import install_lora as install

    if not folder.is_dir():
        raise LorakitError(f"--lora-install-dir {folder}: no such folder",
                           hint="pass the models/loras folder of the ComfyUI you render with")
    return install(lora, folder)


def lora_name_for(url: str, lora: Path, install_dir: Path | None) -> str:
    """The `lora_name` ComfyUI knows the LoRA by: installed into `install_dir`, or already in ComfyUI's list under
    its own name with the same safetensors metadata (so an older file of that name is never benched instead)."""
    if not lora.is_file() or lora.suffix != ".safetensors":
        raise LorakitError(f"{lora}: ComfyUI loads a LoRA from one .safetensors file",
                           hint="bench the kohya-format .safetensors lorakit saved beside it (output.save_format)")
    name = install_lora(lora, install_dir) if install_dir is not None else lora.name
    known = comfyui.lora_names(url)
    hint = ("pass --lora-install-dir with the models/loras folder that this ComfyUI reads (with Docker: the host "
            "side of the mounted folder)")
    if name not in known:
        where = (f"copied it to {install_dir / name}, but" if install_dir is not None else "")
        raise LorakitError(f"{where} ComfyUI at {url} does not list LoRA {name!r} ({len(known)} LoRAs known)".strip(),
                           hint=hint)
    if install_dir is None and comfyui.lora_metadata(url, name) != _metadata(lora):
        raise LorakitError(f"ComfyUI's LoRA {name!r} is not {lora}: their safetensors metadata differ (an older "
                           "file of the same name?)", hint=hint)
    return name


def _metadata(lora: Path) -> dict | None:
    from safetensors import safe_open

    with safe_open(str(lora), "pt") as f:
        return f.metadata() or None


def save_image_bytes(data: bytes, path: Path) -> Path:
    """Write a downloaded image as it came, after checking it is one; never over an existing file."""
    from PIL import Image, UnidentifiedImageError

    try:
        Image.open(io.BytesIO(data)).verify()
    except (UnidentifiedImageError, OSError) as exc:
        raise LorakitError(f"ComfyUI's /view answered for {path.name} with something that is not an image "
                           f"({len(data)} bytes: {exc})") from exc
    if path.exists():
        raise LorakitError(f"{path} already exists; a bench never overwrites its images")
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return path


def render_comfyui(plan: BenchPlan, images_dir: Path, url: str, workflow: comfyui.Workflow,
                   lora_install_dir: Path | None = None, prefix: str = "lorakit/bench",
                   progress: Progress | None = None) -> list[Rendered]:
    """Render every image of `plan` with ComfyUI at `url` into `images_dir` (created; never overwritten)."""
    check_workflow(workflow)
    lora_name = lora_name_for(url, Path(plan.lora), lora_install_dir)
    images_dir.mkdir(parents=True, exist_ok=True)
    done: list[Rendered] = []
    todo = plan.images()
    with comfyui.Connection(url, client_id := str(uuid.uuid4())) as connection:
        for prompt, seed, weight in todo:
            patched = comfyui.patch_workflow(
                workflow, lora_name=lora_name, strength_model=weight, strength_clip=weight, seed=seed,
                positive=plan.prompts[prompt], negative=plan.negative_prompt, batch_size=plan.batch_size,
                filename_prefix=f"{prefix}/w{weight:.2f}/seed{seed}_p{prompt:02d}", steps=plan.steps,
                cfg=plan.cfg, sampler_name=plan.sampler, scheduler=plan.schedule, width=plan.width,
                height=plan.height)
            prompt_id = comfyui.submit(url, patched, client_id)
            run = connection.follow(prompt_id)
            if run.state == "error":
                raise LorakitError(run.error_message or f"ComfyUI failed on prompt {prompt_id}")
            entry = comfyui.history(url, prompt_id)  # written before ComfyUI says it is done (executing: null)
            if entry is None:
                raise LorakitError(f"ComfyUI reported prompt {prompt_id} done but has no history entry for it")
            save_id = comfyui.find_nodes(patched, "SaveImage")[0]
            images = [image for image in comfyui.output_images({**entry, "outputs": {
                save_id: (entry.get("outputs") or {}).get(save_id, {})}}) if image.get("type") == "output"]
            if len(images) != plan.batch_size:  # previews (type "temp") of other nodes are not the bench's
                raise LorakitError(f"ComfyUI's SaveImage node {save_id} gave {len(images)} images for prompt "
                                   f"{prompt_id}, expected {plan.batch_size} (the batch size)")
            for batch, image in enumerate(images):
                path = save_image_bytes(comfyui.view(url, image), images_dir / image_name(prompt, seed, weight, batch))
                done.append(Rendered(prompt, seed, weight, path, batch))
            if progress:
                progress(len({(r.prompt, r.seed, r.weight) for r in done}), len(todo))
    return done
