"""The [mode] table: one section per training mode (mode.type picks which), and the registry of them."""

from __future__ import annotations

from typing import Annotated, Literal, Union

from pydantic import Field, model_validator

from .section import Section


class LoraModeSection(Section):
    """lora: the denoising loss on captioned images (kohya's train_network); with data.reg_data_dir it trains
    DreamBooth-style with prior preservation."""

    type: Literal["lora"] = "lora"
    prior_loss_weight: float = Field(
        1.0, ge=0, description="Loss weight of each regularisation image (data.reg_data_dir), per sample before "
        "the batch mean (kohya's prior_loss_weight).",
    )


class DreamBoothModeSection(LoraModeSection):
    """dreambooth: lora with regularisation (class) images, which data.reg_data_dir must name."""

    type: Literal["dreambooth"] = "dreambooth"  # type: ignore[assignment]


class PromptPair(Section):
    """One iLECO edit: the concept and what it becomes."""

    original_prompt: str = Field(..., min_length=1, description="The concept to edit, e.g. 'Mona Lisa'.")
    target_prompt: str = Field("", description="What the concept becomes; empty = erase it.")
    guidance_scale: float | None = Field(
        None, description="This pair's strength; unset = the section's guidance_scale.")


class IlecoModeSection(Section):
    """ileco: edit a concept from prompts alone (TrainTrain's instant LECO); see docs/modes.md."""

    type: Literal["ileco"] = "ileco"
    original_prompt: str = Field("", description="The concept to edit (TrainTrain's Original Prompt).")
    target_prompt: str = Field(
        "", description="What the concept becomes (TrainTrain's Target Prompt); empty = erase it.")
    guidance_scale: float = Field(
        0.0, description="LECO's erase term: 0 = TrainTrain's iLECO (the target prompt's prediction alone); > 0 "
        "also pushes away from the original prompt (LECO erase, ESD's negative guidance); < 0 towards it (enhance).")
    prompts: list[PromptPair] = Field(
        default_factory=list,
        description="Several edits in one run, as a list of {original_prompt, target_prompt, guidance_scale} "
        "tables (LECO's prompts file); added after original_prompt/target_prompt.",
    )

    @model_validator(mode="after")
    def _some_prompt(self) -> "IlecoModeSection":
        if not self.original_prompt and not self.prompts:
            raise ValueError("ileco needs original_prompt (the concept to edit) or a prompts list")
        if self.target_prompt and not self.original_prompt:
            raise ValueError("target_prompt is set but original_prompt is empty: set the concept to edit")
        return self

    def pairs(self) -> list[PromptPair]:
        """Every edit of the run: original_prompt/target_prompt first, then `prompts`."""
        first = [PromptPair(original_prompt=self.original_prompt, target_prompt=self.target_prompt)] \
            if self.original_prompt else []
        return first + list(self.prompts)


class SecondPassSection(Section):
    """difference: settings of pass 2 (the difference LoRA) that differ from pass 1 (the copy machine), as
    TrainTrain's Difference_Use2ndPassSettings; unset = pass 1's value."""

    network_dim: int | None = Field(None, ge=1, le=1024, description="Rank (TrainTrain's preset: 4, vs 16).")
    network_alpha: float | None = Field(None, gt=0, description="Alpha.")
    learning_rate: float | None = Field(None, gt=0, description="Learning rate.")
    max_train_steps: int | None = Field(None, ge=1, description="Iterations.")
    train_batch_size: int | None = Field(None, ge=1, description="Batch size (1–3 is enough: one image).")


class DifferenceModeSection(Section):
    """difference: a slider from two images (TrainTrain's copy-machine method); see docs/modes.md."""

    type: Literal["difference"] = "difference"
    original_image: str | None = Field(None, description="The 'before' image; pass 1 learns to copy it.")
    target_image: str | None = Field(
        None, description="The 'after' image, the same size; pass 2 learns only what differs.")
    second_pass: SecondPassSection = Field(default_factory=SecondPassSection)
    save_first_pass: bool = Field(False, description="Also save the copy machine (<output_name>_copy).")
    first_pass_only: bool = Field(False, description="Train and save only the copy machine.")
    first_pass_file: str | None = Field(
        None, description="Load the copy machine from this LoRA file instead of training pass 1.")
    prompt: str = Field(
        "", description="Caption of both images in both passes; empty = none, as TrainTrain's original prompt.")

    @model_validator(mode="after")
    def _options(self) -> "DifferenceModeSection":
        """Contradictory options (the images themselves are checked with the other paths by config validate)."""
        problems = []
        if self.first_pass_only and self.first_pass_file:
            problems.append("first_pass_only with first_pass_file trains nothing: remove one")
        if self.save_first_pass and self.first_pass_file:
            problems.append("save_first_pass with first_pass_file: pass 1 is loaded, not trained; remove one")
        if self.first_pass_only and any(v is not None for v in self.second_pass.model_dump().values()):
            problems.append("second_pass is set but first_pass_only skips pass 2: remove one")
        if problems:
            raise ValueError("; ".join(problems))
        return self


ModeSection = Annotated[
    Union[LoraModeSection, DreamBoothModeSection, IlecoModeSection, DifferenceModeSection],
    Field(discriminator="type"),
]


MODE_SECTIONS: dict[str, type[Section]] = {
    "lora": LoraModeSection, "dreambooth": DreamBoothModeSection, "ileco": IlecoModeSection,
    "difference": DifferenceModeSection,
}
