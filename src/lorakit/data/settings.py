"""The `[data]` config section: where the images are and how they become training examples."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class DataSection(BaseModel):
    """Training images, captions and resolution."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    train_data_dir: str = Field("", description="Folder of training images (searched recursively) with .txt captions.")
    caption_extension: str = Field(".txt", description="Caption file extension; '.caption' is the fallback.")
    trigger_word: str = Field("", description="Prepended to every caption (and used alone when an image has none).")
    resolution: int = Field(512, ge=64, le=4096, description="Training resolution in pixels (square, for now).")
