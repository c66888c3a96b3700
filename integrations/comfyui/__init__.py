"""lorakit's ComfyUI custom nodes (copy or link this folder into ComfyUI's custom_nodes/, or run
`lorakit comfyui install --path COMFYUI_DIR`)."""

from .nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS"]
