"""lorakit: train LoRA adapters for Stable Diffusion-family models."""

from importlib import metadata as _metadata

try:
    __version__ = _metadata.version("lorakit")  # one source of truth: pyproject.toml
except _metadata.PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"
