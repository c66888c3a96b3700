"""Every real kohya config in ../shared/testdata/kohya-configs/: `config import` + `config validate` + `plan` must give
the run sd-scripts would give (the table in kohya_expected.py, written from kohya's code)."""

from __future__ import annotations

import ast
import json
import math
import tomllib
from pathlib import Path
from typing import Any

import pytest
import tomli_w

from lorakit.errors import LorakitError

from conftest import write_images  # noqa: I001 (tests/ is on sys.path, as for tests/engine/helpers.py)
from config.kohya_expected import ROWS, SD_SCRIPTS_DEFAULTS, WHY, Row

DATA = Path(__file__).parents[2].parent / "shared" / "testdata" / "kohya-configs"
pytestmark = pytest.mark.skipif(not DATA.is_dir(), reason=f"{DATA} is absent")
# validate's refusals of what the machine lacks (engine/device.device_findings: fp16 on the CPU): a GPU run is meant
MACHINE = ("this machine", "does not train on the CPU", "do not work on the CPU", "does not run on the CPU")
TINY = {"sd1": "tiny-sd1", "sd2": "tiny-sd2-v", "sdxl": "tiny-sdxl"}
SIZE = (512, 512)  # one bucket whatever the bucket settings: batches per epoch = ceil(samples / batch)


def _is_dataset_toml(path: Path) -> bool:
    return path.suffix == ".toml" and "datasets" in tomllib.loads(path.read_text(encoding="utf-8"))


def _files(dataset: bool) -> list[str]:
    if not DATA.is_dir():
        return []
    return sorted(p.name for p in DATA.iterdir() if p.suffix in (".json", ".toml") and _is_dataset_toml(p) == dataset)


def _replace(values: dict[str, Any], swaps: dict[str, Any]) -> bool:
    """Set every key of `swaps` wherever it sits (sd-scripts flattens one level of TOML tables); True if any."""
    found = False
    for key, value in values.items():
        if isinstance(value, dict):
            found = _replace(value, swaps) or found
        elif key in swaps and (value or key == "pretrained_model_name_or_path"):
            values[key] = swaps[key]
            found = True
    return found


def _dataset_copy(name: str, tmp: Path) -> Path:
    """The dataset TOML with each subset's folders replaced by synthetic ones (3 images, 5 for a reg subset)."""
    data = tomllib.loads((DATA / name).read_text(encoding="utf-8"))
    for d, dataset in enumerate(data["datasets"]):
        for s, subset in enumerate(dataset.get("subsets", [])):
            reg = bool(subset.get("is_reg"))
            folder = write_images(tmp / "ds" / f"{'reg' if reg else 'train'}{d}_{s}", 5 if reg else 3, SIZE)
            subset["image_dir"] = str(folder)
            if subset.get("conditioning_data_dir"):  # masks named like the images
                subset["conditioning_data_dir"] = str(write_images(tmp / "ds" / f"mask{d}_{s}", 3, SIZE, seed=1))
    out = tmp / name
    out.write_text(tomli_w.dumps(data), encoding="utf-8")
    return out


def _config_copy(name: str, row: Row, tmp: Path) -> tuple[Path, Path | None]:
    """The config with the authors' paths replaced by synthetic folders and the family's tiny model."""
    source = DATA / name
    dataset = _dataset_copy(row.dataset_toml, tmp) if row.dataset_toml else None
    (tmp / "prompts.txt").write_text("a photo\n", encoding="utf-8")
    swaps: dict[str, Any] = {"pretrained_model_name_or_path": TINY[row.family], "output_dir": str(tmp / "out"),
                             "logging_dir": str(tmp / "log"), "sample_prompts": str(tmp / "prompts.txt")}
    if dataset is None:
        write_images(tmp / "img" / "10_subject", 3, SIZE)
        swaps["train_data_dir"] = str(tmp / "img")
    else:
        swaps["dataset_config"] = str(dataset)
    if row.reg:
        write_images(tmp / "reg" / "1_class", 5, SIZE, seed=2)
        swaps["reg_data_dir"] = str(tmp / "reg")
    if source.suffix == ".json":
        values = json.loads(source.read_text(encoding="utf-8"))
        if source.name != "CyberLoRA_kohya_config.json" and "sample_prompts" in values:
            swaps.pop("sample_prompts")  # the GUI's sample_prompts is the prompt text, not a file
    else:
        values = tomllib.loads(source.read_text(encoding="utf-8"))
    for key in ("pretrained_model_name_or_path", "train_data_dir"):
        if key in swaps and not _replace(values, {key: swaps[key]}):
            values[key] = swaps[key]  # presets name no folder or model; the GUI user picks them
    _replace(values, swaps)
    out = tmp / name
    out.write_text(json.dumps(values) if source.suffix == ".json" else tomli_w.dumps(values), encoding="utf-8")
    return out, dataset


def _args(items: list[str]) -> dict[str, Any]:
    """k=v strings as sd-scripts reads them (train_util.get_optimizer / get_scheduler_fix: ast.literal_eval)."""
    out: dict[str, Any] = {}
    for item in items:
        key, _, value = item.partition("=")
        try:
            out[key.strip()] = ast.literal_eval(value.strip())
        except (ValueError, SyntaxError):
            out[key.strip()] = value.strip()
    return out


ADAFACTOR_DEFAULTS = {"scale_parameter": True, "relative_step": True, "warmup_init": False}  # transformers.Adafactor


def _optimizer_args(optimizer: str, items: list[str]) -> dict[str, Any]:
    """Adafactor's args with transformers' own defaults filled in: writing them out changes nothing."""
    args = _args(items)
    return {**ADAFACTOR_DEFAULTS, **args} if optimizer.lower() == "adafactor" else args


def _actual(cfg: Any, plan: Any, column: str) -> Any:
    """lorakit's value for a table column (normalised to sd-scripts' meaning of unset)."""
    t, d, n = cfg.train, cfg.data, cfg.network
    derived = {
        "plan.total_steps": lambda: plan.steps.total_steps,
        "plan.warmup_steps": lambda: plan.steps.warmup_steps,
        "train.text_encoder_lr*": lambda: t.learning_rate if t.text_encoder_lr is None else t.text_encoder_lr,
        "train.lr_scheduler_args*": lambda: _args(t.lr_scheduler_args),
        "train.optimizer_args": lambda: _optimizer_args(t.optimizer_type, t.optimizer_args),
        "data.size": lambda: list(d.image_size) if d.image_size else [d.resolution, d.resolution],
        "network.scale": lambda: n.network_alpha / n.network_dim,
        "train.clip_skip": lambda: t.clip_skip or 1,
        "train.max_token_length": lambda: t.max_token_length or 75,
        "train.min_timestep": lambda: t.min_timestep or 0,
        "train.max_timestep": lambda: 1000 if t.max_timestep is None else t.max_timestep,
    }
    if column in derived:
        return derived[column]()
    section, key = column.split(".")
    holder = getattr(cfg, section)
    if not hasattr(holder, key):
        return f"<no lorakit setting {column}>"
    return getattr(holder, key)


def _same(got: Any, want: Any) -> bool:
    if isinstance(want, float) and isinstance(got, (int, float)) and not isinstance(got, bool):
        return math.isclose(got, want, rel_tol=1e-9)
    if isinstance(want, dict) and isinstance(got, dict):
        return got.keys() == want.keys() and all(_same(got[k], want[k]) for k in want)
    if isinstance(want, (list, tuple)) and isinstance(got, (list, tuple)):
        return len(got) == len(want) and all(_same(a, b) for a, b in zip(got, want))
    return type(got) is type(want) and got == want if isinstance(want, bool) or isinstance(got, bool) else got == want


def _argparse(column: str) -> str:
    key = column.split(".")[-1]
    return f"sd-scripts argparse --{key} (train_util.py / train_network.py; GUI: lora_gui.train_model)"


def _unsupported_lines(output: str) -> list[str]:
    return [line for line in output.splitlines() if "unsupported" in line.lower()]


@pytest.mark.parametrize("name", _files(dataset=False))
def test_import_is_the_run_kohya_would_train(name: str, tmp_path: Path, cli) -> None:
    from lorakit.config.loader import Layer, resolve
    from lorakit.config.plan import build_plan

    assert name in ROWS, f"{name}: no row in kohya_expected.ROWS; read kohya's code and add one"
    row = ROWS[name]
    config, dataset = _config_copy(name, row, tmp_path)
    out = tmp_path / "imported.toml"
    rc, output = cli("config", "import", config, *(["--dataset-toml", dataset] if dataset else []), "-o", out)
    assert rc == 0 and out.exists(), f"import exited {rc}:\n{output[-3000:]}"
    problems = []
    for key in row.unsupported:
        if not any(key in line for line in _unsupported_lines(output)):
            problems.append(f"{key}: not reported as unsupported (kohya trains it; lorakit cannot)")
    rc, validated = cli("config", "validate", out)
    refusals = [line for line in validated.splitlines() if line.strip().startswith("- ")
                and not any(m in line for m in MACHINE)]
    if rc != 0 and (refusals or "- " not in validated):  # what this CPU machine lacks is not the import's fault
        problems.append(f"config validate exited {rc}: " + " | ".join(refusals or [validated.strip()[-800:]]))
    cfg = resolve([Layer(str(out), tomllib.loads(out.read_text(encoding="utf-8")))])  # the values, unchecked
    try:
        plan = build_plan(cfg)
    except LorakitError as exc:
        problems.append(f"plan failed: {exc}")
        plan = None
    expected = {**SD_SCRIPTS_DEFAULTS, **row.columns}
    if str(expected["train.optimizer_type"]).lower() == "adafactor":
        expected["train.optimizer_args"] = {**ADAFACTOR_DEFAULTS, **expected["train.optimizer_args"]}
    why = {**WHY, "plan.total_steps": row.steps_why, "plan.warmup_steps": row.warmup_why}
    for column, want in expected.items():
        if plan is None and column.startswith("plan.") or column in row.gaps:
            continue
        got = _actual(cfg, plan, column)
        if not _same(got, want):
            problems.append(f"{column}: lorakit {got!r}, kohya {want!r} (why: {why.get(column, _argparse(column))})")
    assert not problems, f"{name}: {len(problems)} columns differ from what kohya trains:\n  " + "\n  ".join(problems)


@pytest.mark.parametrize("name", _files(dataset=True))
def test_a_dataset_toml_alone_is_refused(name: str, cli) -> None:
    rc, output = cli("config", "import", DATA / name)
    assert rc != 0, f"{name}: a dataset TOML given as the main file imported (exit 0)"
    assert "--dataset-toml" in output, output


# one of each kind: Prodigy + a scheduler class + LoKr at full dimension, Adafactor's relative step, LoHa with
# multires noise and accumulation, a dataset TOML with masks, DAdaptAdam with a warm-up, a v-prediction SDXL
TRAINED = ["kss_SDXL-1image-LoKr-prodigy.json", "kss_SDXL-adafactor.json", "kss_loha-sd15.json",
           "headshots_train_config.json", "kss_SDXL-kudou-reira-dadaptadam.json", "motimalu_prodigy-01-v-pred.toml"]


@pytest.mark.parametrize("name", [n for n in TRAINED if n in ROWS])
def test_an_imported_config_trains(name: str, tmp_path: Path) -> None:
    """The import is a run that starts and finishes: two steps on the tiny model, on the CPU (fp32, 64 px)."""
    from lorakit import api
    from lorakit.config.importers import import_file
    from lorakit.config.loader import resolve_layers

    config, dataset = _config_copy(name, ROWS[name], tmp_path)
    values = import_file(config, dataset).values
    values["train"].update({"max_train_steps": 2, "mixed_precision": "no", "lora_precision": "fp32"})
    values["train"].pop("max_train_epochs", None)
    values["data"].update({"resolution": 64, "min_bucket_reso": 64, "bucket_reso_steps": 64})
    for key in ("image_size", "max_bucket_reso"):
        values["data"].pop(key, None)
    values.pop("sample", None)
    values["output"] = {**values.get("output", {}), "output_dir": str(tmp_path / "runs")}
    values["checkpoint"] = {"every_n_steps": 0, "at_end": False}
    run = tmp_path / "run.toml"
    run.write_text(tomli_w.dumps({"version": 2, **values}), encoding="utf-8")
    result = api.train(resolve_layers(files=[str(run)]).config)
    assert result.lora_path is not None and result.lora_path.stat().st_size > 0
