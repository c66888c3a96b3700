"""The sections the tools around training read, never a training run: [bench] (`lorakit bench`, `lorakit pipeline`),
[batch] and [storage] (`lorakit batch`). `schema.LorakitConfig` holds them and re-exports them."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from .section import Section


class BenchSection(Section):
    """The bench (`lorakit bench`, `lorakit pipeline`): every prompt × seed × LoRA weight rendered into comparison
    grids, metrics.csv and index.html under runs/<run_id>/bench/. Command-line options override these values."""

    weights: list[float] = Field(
        default_factory=lambda: [0.0, 0.4, 0.6, 0.8, 1.0],
        description="LoRA weights (strengths) to sweep; 0 = the base model, which the effect metrics compare to.")
    seeds: list[int] = Field(default_factory=lambda: [123456789, 987654321], description="Seeds to sweep.")
    prompts: list[str] = Field(
        default_factory=list, description="Prompts to render; empty = [sample] prompts, else the workflow's "
        "(comfyui), else the first training caption.")
    negative_prompt: str | None = Field(None, description="Negative prompt; unset = none (comfyui: the workflow's).")
    sampler: str | None = Field(
        None, description="Sampler by ComfyUI's name (euler, euler_ancestral, dpmpp_2m, ddim) or A1111's ('Euler "
        "a', 'DPM++ 2M Karras'); unset = euler (comfyui: the workflow's, any ComfyUI sampler).")
    scheduler: str | None = Field(
        None, description="ComfyUI's scheduler: normal or karras (comfyui: any of ComfyUI's, e.g. simple, "
        "exponential); unset = normal (comfyui: the workflow's).")
    steps: int | None = Field(None, ge=1, le=1000, description="Inference steps; unset = 20 (comfyui: the "
                              "workflow's).")
    cfg: float | None = Field(None, ge=0, description="Guidance scale; unset = 7 (comfyui: the workflow's).")
    width: int | None = Field(None, ge=64, le=4096, multiple_of=8,
                              description="Image width; unset = the model's resolution (comfyui: the workflow's).")
    height: int | None = Field(None, ge=64, le=4096, multiple_of=8, description="Image height; as width.")
    batch_size: int = Field(1, ge=1, le=64, description="Images per prompt, seed and weight (the grids show the "
                            "first, metrics.csv has all).")
    backend: Literal["builtin", "comfyui"] = Field(
        "builtin", description="builtin = diffusers in lorakit (the model loaded once); comfyui = a running "
        "ComfyUI through `workflow`.")
    comfy_url: str = Field("http://127.0.0.1:8188", description="The ComfyUI server (backend comfyui).")
    workflow: str | None = Field(None, description="API-format ComfyUI workflow file (backend comfyui; required).")
    lora_install_dir: str | None = Field(
        None, description="ComfyUI's models/loras folder; the LoRA is copied there under a name from its content "
        "(backend comfyui). Unset = the LoRA must already be in ComfyUI's list under its own name.")
    compare_training_images: bool = Field(
        True, description="Add the colour-histogram distance (and embedding similarity) to the training images.")
    embedding_model: str | None = Field(
        None, description="A local CLIP or DINOv2 folder (transformers format): adds image-embedding similarity to "
        "the training images; unset = none.")

    @model_validator(mode="after")
    def _comfyui_needs_a_workflow(self) -> "BenchSection":
        if self.backend == "comfyui" and not self.workflow:
            raise ValueError("backend 'comfyui' needs bench.workflow: an API-format workflow file")
        return self


class BatchSection(Section):
    """Unattended batches (`lorakit batch --env batch.toml`): every sub-folder (or ZIP) of the working folder, pulled
    from the remote's training folder when [storage] names one, becomes one run; results are uploaded, and what
    failed is kept. The env file is a config layer over `base_config`."""

    base_config: str | None = Field(
        None, description="The training config every run starts from (a TOML file, relative to the env file, or a "
        "preset name); the env file and `add` layers apply over it.")
    working_dir: str = Field("batch", description="Local folder the training folders are downloaded into (must "
                             "exist).")
    stage_dir: str | None = Field(
        None, description="Fast local disk the base model is copied to for the batch (removed afterwards; the "
        "original is never moved); unset = use it in place.")
    add: list[str] = Field(
        default_factory=list,
        description="Extra TOML layers applied to every run (like --add); each appends its stem to output_name.",
    )
    output_suffix: str = Field("", description="Each run is named <folder>_<output_suffix> (just <folder> when "
                               "empty); --add layers append their stems.")
    oom_retries: int = Field(2, ge=0, le=10, description="Retries after a GPU out-of-memory: first with oom_file, "
                             "then lorakit's ladder (gradient checkpointing, cached latents, smaller batch with "
                             "more accumulation, 8-bit AdamW, lower resolution).")
    oom_file: str | None = Field(
        None, description="TOML layer for the first out-of-memory retry (the spec's outofmemory.toml); unset = "
        "the shipped oom-fallback preset.")
    cleanup_on_success: bool = Field(
        True, description="After a verified upload, delete the local training folder and the local run folder. "
        "Without a remote nothing is deleted; failures are always kept.")
    lora_install_dir: str | None = Field(
        None, description="Also copy each finished LoRA into this folder (a UI's LoRA folder, e.g. ComfyUI's "
        "models/loras); never over an existing file.")
    max_zip_bytes: int = Field(20 * 2**30, ge=1, description="Refuse a ZIP that would expand beyond this many "
                               "bytes (zip bombs).")
    worker_id: str | None = Field(
        None, description="This batch's name when several share a remote (claims are training/.claimed/<id>/); "
        "unset = the host name.")
    lease_hours: float = Field(24.0, gt=0, description="`--reclaim` returns the claims of a worker whose lease "
                               "was last renewed longer ago than this.")


class StorageSection(Section):
    """Remote storage through rclone (`lorakit batch`): training folders come from
    <rclone_remote><remote_path>/<training_subdir>, results go to <rclone_remote><remote_path>/<output_subdir>."""

    rclone_remote: str = Field("", description="rclone remote name with colon, e.g. 'gdrive:'; empty = no remote "
                               "(the working folder is used as it is).")
    remote_path: str = Field("lorakit", description="Base folder on the remote.")
    training_subdir: str = Field("training", description="Sub-folder of remote_path the training folders come from.")
    output_subdir: str = Field("output", description="Sub-folder of remote_path the results are uploaded to.")
    delete_remote_inputs: bool = Field(
        False, description="Delete a training folder's files on the remote once the run is uploaded (its empty "
        "folders stay); false = move it to <training_subdir>/.done/.")
    empty_trash: bool = Field(
        False, description="Run `rclone cleanup` after uploads (empties e.g. Google Drive's trash)."
    )
