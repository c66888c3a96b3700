"""lorakit: train LoRA adapters for Stable Diffusion-family models."""

__version__ = "0.1.0"
