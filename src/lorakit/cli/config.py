"""`lorakit config show|validate|schema|import|presets|migrate` and `lorakit plan`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Optional

import tomli_w
import typer
from rich.markup import escape

from ..config.loader import ResolvedConfig, read_toml
from ..config.plan import plan_lines
from ..config.provenance import DEFAULT_ORIGIN
from ..config.schema import LorakitConfig
from ..errors import ConfigError
from ..io import write_text_atomic
from .main import app
from .options import AddFiles, ConfigFiles, OomLayer, PresetName, SetValues, err_console, resolve_options

config_app = typer.Typer(help="Inspect, validate, import and convert configs.", no_args_is_help=True)
app.add_typer(config_app, name="config")

Files = Annotated[list[Path], typer.Argument(help="Config TOML files (same as --config; later files win).")]


def _toml_value(value: Any) -> str:
    """One value as inline TOML text (lists stay on one line)."""
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return tomli_w.dumps({"v": value}).split("=", 1)[1].strip()


def render_with_origins(resolved: ResolvedConfig) -> str:
    """The resolved config as TOML with `# from <layer>` after each value (still valid TOML)."""
    data = resolved.config.model_dump(mode="json")
    lines = [f"version = {data.pop('version')}"]
    for section, values in data.items():
        lines += ["", f"[{section}]"]
        for key, value in values.items():
            origin = resolved.origins.get(f"{section}.{key}", DEFAULT_ORIGIN)
            if value is None:
                lines.append(f"# {key} is unset  # from {origin}")
            else:
                lines.append(f"{key} = {_toml_value(value)}  # from {origin}")
    return "\n".join(lines) + "\n"


@config_app.command("show")
def show(
    files: Files = [],
    config: ConfigFiles = [],
    add: AddFiles = [],
    preset: PresetName = None,
    set_: SetValues = [],
    oom: OomLayer = False,
    origin: Annotated[bool, typer.Option("--origin", help="Show which layer set each value.")] = False,
) -> None:
    """Print the resolved config (TOML); with --origin, which layer set each value."""
    from ..config.snapshot import config_toml

    resolved = resolve_options([*files, *config], add, preset, set_, oom)
    typer.echo(render_with_origins(resolved) if origin else config_toml(resolved.config), nl=False)


@config_app.command("validate")
def validate(
    files: Files = [],
    add: AddFiles = [],
    preset: PresetName = None,
    set_: SetValues = [],
    paths: Annotated[bool, typer.Option("--paths/--no-paths", help="Also check files and folders.")] = True,
    strict: Annotated[bool, typer.Option("--strict", help="Treat warnings as errors, and refuse modules that "
                                         "sd-scripts, A1111, ComfyUI or diffusers would ignore.")] = False,
) -> None:
    """Check config files (layered in order) without running anything; exit 2 listing every problem.

    Only `--strict` builds the model's weightless skeleton to check the adapted modules against each consumer
    (as `lorakit plan` does): it imports torch and reads model configs, which plain validation stays free of."""
    if not files and not preset:
        raise ConfigError(["nothing to validate: name one or more TOML files (or --preset)"])
    resolved = resolve_options(files, add, preset, set_, check_paths=paths)
    if strict:
        from ..networks.consumers import consumer_problems

        problems = [*resolved.warnings, *consumer_problems(resolved.config)]
        if problems:
            raise ConfigError(problems, "--strict treats warnings as errors, and modules a consumer would ignore too")
    typer.echo(f"ok: {', '.join(x.name for x in resolved.layers) or 'defaults'} ({len(resolved.warnings)} warnings)")


@config_app.command("schema")
def schema() -> None:
    """Print the JSON Schema of lorakit config files."""
    typer.echo(json.dumps(LorakitConfig.model_json_schema(), indent=2))


@config_app.command("presets")
def presets() -> None:
    """List the shipped presets."""
    from ..config.presets import list_presets

    for name, description in list_presets().items():
        typer.echo(f"{name:16} {description}")


def _write_new(path: Path, text: str, force: bool) -> None:
    """Write `text` to `path`, refusing to overwrite an existing file unless forced."""
    if path.exists() and not force:
        raise ConfigError([f"{path}: already exists"], "choose another --out or pass --force")
    write_text_atomic(path, text)


@config_app.command("import")
def import_(
    file: Annotated[Path, typer.Argument(help="kohya_ss GUI .json, sd-scripts .toml training config, or "
                                          "TrainTrain .json preset / saved settings.")],
    dataset_toml: Annotated[Optional[Path], typer.Option("--dataset-toml", help="sd-scripts dataset TOML.")] = None,
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="Write the lorakit TOML here.")] = None,
    force: Annotated[bool, typer.Option("--force", help="Overwrite --out if it exists.")] = False,
    strict: Annotated[bool, typer.Option("--strict", help="Exit with status 2 when a setting the run depends "
                                         "on is unsupported (the lorakit run would differ from the source "
                                         "tool's).")] = False,
    report: Annotated[bool, typer.Option("--report", help="List every key: mapped (old → new), inert (why) "
                                         "and unsupported (what lorakit would need).")] = False,
) -> None:
    """Convert a kohya_ss GUI JSON / sd-scripts TOML into a lorakit TOML that trains what kohya would (the GUI's
    values as kohya_ss launches sd-scripts, absent keys at sd-scripts' defaults, kohya's folder layout), or a
    TrainTrain JSON preset into the same LoRA / iLECO / Difference run. A preset's blanks (image folder, prompts,
    images) are listed to fill in."""
    from ..config.importers import import_file
    from ..config.loader import Layer, resolve

    result = import_file(file, dataset_toml)
    groups = result.report()
    if report:
        for key, _, target in groups["mapped"]:
            err_console.print(escape(f"mapped:      {_mapping(result, key, target)}"))
        for key, value, why in groups["inert"]:
            err_console.print(escape(f"inert:       {key}{'' if value is None else f' = {value!r}'}: {why}"))
    for key, value, need in groups["unsupported"]:
        err_console.print(f"[yellow]unsupported:[/] {escape(f'{key} = {value!r}: {need}')}")
    if result.defaults:
        err_console.print(escape(f"not in the file, at {result.defaults_of}'s defaults: {', '.join(result.defaults)}"))
    for note in result.notes:
        err_console.print(f"[cyan]note:[/] {escape(note)}")
    for key, what in result.to_fill.items():
        err_console.print(f"[cyan]to fill in before training:[/] {escape(f'{key}: {what}')}")
    # a value lorakit rejects is reported (exit 2) and nothing written; a preset's blanks are checked as filled
    resolve([Layer(str(file), result.values), Layer("(blanks to fill)", _filled(result.to_fill))])
    text = result.to_toml(str(file))
    summary = (f"{len(groups['mapped'])} mapped, {len(groups['inert'])} inert, "
               f"{len(groups['unsupported'])} unsupported")
    if out:
        _write_new(out, text, force)
        err_console.print(escape(f"wrote {out}: {summary}"))
    else:
        typer.echo(text, nl=False)
        err_console.print(escape(summary))
    if strict and groups["unsupported"]:
        raise ConfigError([f"{file}: {len(groups['unsupported'])} setting(s) {result.tool} would use are unsupported "
                           "(listed above)"], "set them by hand, or import without --strict to accept the "
                          "difference")


def _filled(to_fill: dict[str, str]) -> dict[str, Any]:
    """A stand-in value for each blank, so the check sees a run whose only gap is what the user must fill in."""
    values: dict[str, Any] = {}
    for dotted in to_fill:
        *parents, leaf = dotted.split(".")
        node = values
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = "to-fill"
    return values


def _mapping(result: Any, key: str, target: str) -> str:
    """'key = old → lorakit.key = new (how)': the value kohya passes to sd-scripts and the lorakit value."""
    import re

    inner = re.fullmatch(r"(.+) \((\w+)\)", key)  # a GUI key and the sd-scripts argument it became
    source = inner.group(2) if inner else key.split(" ")[-1].removeprefix("--")
    old = f" = {result.source[source]!r}" if source in result.source else ""
    dotted = re.match(r"([a-z]+\.[a-z_0-9]+)", target)
    if not dotted or " = " in target:
        return f"{key}{old} → {target}"
    node: Any = result.values
    for part in dotted.group(1).split("."):
        node = node.get(part) if isinstance(node, dict) else None
    rest = target[dotted.end():]
    return f"{key}{old} → {dotted.group(1)}" + (f" = {node!r}" if node is not None else "") + rest


@config_app.command("migrate")
def migrate(
    file: Annotated[Path, typer.Argument(help="A lorakit TOML of an older version.")],
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="Write here instead of printing.")] = None,
    force: Annotated[bool, typer.Option("--force", help="Overwrite --out if it exists.")] = False,
) -> None:
    """Rewrite a config file in the current format."""
    layer = read_toml(file)
    text = tomli_w.dumps(layer.values)
    for note in layer.notes:
        err_console.print(f"[cyan]note:[/] {escape(note)}")
    if out:
        _write_new(out, text, force)
    else:
        typer.echo(text, nl=False)


@app.command("plan")
def plan(
    files: Files = [],
    config: ConfigFiles = [],
    add: AddFiles = [],
    preset: PresetName = None,
    set_: SetValues = [],
    processes: Annotated[Optional[int], typer.Option(
        "--processes", min=1, help="Plan a run launched on this many processes (`accelerate launch "
        "--num_processes N` / torchrun): each step takes train_batch_size × N images. Default: the launcher's "
        "WORLD_SIZE, else 1.")] = None,
) -> None:
    """Show what a run will do: images, repeats, steps, warm-up, saves, output path (nothing is trained).

    What this machine lacks for the run (CUDA for fp16, a package) is a warning here, so a run meant for a GPU
    machine can be planned on a laptop; `config validate` and `train` refuse it."""
    from ..engine.distributed import launched_world

    resolved = resolve_options([*files, *config], add, preset, set_, check_paths=True, machine="warn")
    for line in plan_lines(resolved.config, processes or launched_world()):
        typer.echo(line)
