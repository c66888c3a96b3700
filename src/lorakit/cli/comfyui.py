"""`lorakit comfyui install`: put lorakit's ComfyUI nodes (integrations/comfyui) into a ComfyUI's custom_nodes."""

from __future__ import annotations

import filecmp
import os
import shutil
from pathlib import Path
from typing import Annotated, Optional

import typer

from ..errors import LorakitError
from .main import app

comfyui_app = typer.Typer(help="ComfyUI integration: nodes that train through lorakit's job queue.",
                          no_args_is_help=True)
app.add_typer(comfyui_app, name="comfyui")
PACKAGE_FILES = ("__init__.py", "nodes.py", "README.md")


def node_package(source: Optional[Path] = None) -> Path:
    """The integrations/comfyui folder of this lorakit checkout (src/lorakit/cli → the checkout's root)."""
    folder = source or Path(__file__).resolve().parents[3] / "integrations" / "comfyui"
    if not (folder / "nodes.py").is_file():
        raise LorakitError(f"lorakit's ComfyUI nodes are not at {folder}",
                           "install from a lorakit checkout (pip install -e .), or copy its integrations/comfyui "
                           "folder into ComfyUI's custom_nodes/lorakit by hand")
    return folder


def _same_package(target: Path, source: Path) -> bool:
    if target.is_symlink():
        return target.resolve() == source.resolve()
    return target.is_dir() and all((target / name).is_file() and filecmp.cmp(source / name, target / name,
                                                                             shallow=False)
                                   for name in PACKAGE_FILES if (source / name).is_file())


def install(comfy_dir: Path, link: bool = False, source: Optional[Path] = None) -> tuple[Path, str]:
    """Copy (or symlink) the node package to <comfy_dir>/custom_nodes/lorakit; never over a different folder.
    Returns the target and what happened ("copied", "linked" or "already installed")."""
    source = node_package(source)
    custom = comfy_dir / "custom_nodes"
    if not custom.is_dir():
        raise LorakitError(f"{custom} is not a folder: {comfy_dir} does not look like a ComfyUI folder",
                           "pass the folder that holds ComfyUI's main.py and custom_nodes/")
    target = custom / "lorakit"
    if target.exists() or target.is_symlink():
        if _same_package(target, source):
            return target, "already installed"
        raise LorakitError(f"{target} already exists and is not this lorakit's node package; it was left as it is",
                           "move or delete that folder yourself, then run the command again")
    if link:
        os.symlink(source.resolve(), target, target_is_directory=True)
        return target, "linked"
    partial = custom / ".lorakit.partial"
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir()
    for name in PACKAGE_FILES:
        if (source / name).is_file():
            shutil.copy2(source / name, partial / name)
    partial.rename(target)  # ComfyUI never loads a half-copied package
    return target, "copied"


@comfyui_app.command("install")
def install_command(path: Annotated[Path, typer.Option("--path", help="The ComfyUI folder (holding custom_nodes/).")],
                    link: Annotated[bool, typer.Option("--link", help="Symlink instead of copying, so the nodes "
                                                       "follow this checkout's updates.")] = False) -> None:
    """Install lorakit's ComfyUI nodes (Train LoRA, Queue status, Load trained LoRA) into COMFYUI_DIR/custom_nodes.
    Restart ComfyUI afterwards; lorakit must be importable by the Python that runs ComfyUI."""
    target, done = install(path.expanduser(), link)
    typer.echo(f"{done}: {target}\nrestart ComfyUI; the nodes are under the 'lorakit' category")
