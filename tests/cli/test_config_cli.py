"""`lorakit config …` and `lorakit plan` through the real entry point (in-process): output and exit status."""

from __future__ import annotations

import json
import sys
import tomllib
from pathlib import Path

import pytest

from lorakit.cli.main import main


@pytest.fixture
def cli(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]):
    """Run `lorakit ARGS…` as the console script does; returns (exit status, stdout, stderr)."""

    def run(*args: str) -> tuple[int, str, str]:
        monkeypatch.setattr(sys, "argv", ["lorakit", *args])
        with pytest.raises(SystemExit) as exc:
            main()
        out = capsys.readouterr()
        return exc.value.code or 0, out.out, " ".join(out.err.split())  # rich wraps long lines

    return run


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_show_with_origins_is_loadable_toml(cli, tmp_path: Path) -> None:
    user = write(tmp_path / "mine.toml", '[output]\noutput_name = "x"\n')
    code, out, _ = cli("config", "show", str(user), "--preset", "sd21-floorplan", "--add", "lowvram-8gb",
                       "--set", "train.seed=9", "--origin")
    assert code == 0
    assert 'output_name = "x_lowvram-8gb"  # from --add suffix' in out
    assert "network_dim = 4  # from preset:sd21-floorplan" in out
    assert "seed = 9  # from --set" in out
    assert 'optimizer_type = "AdamW8bit"  # from --add preset:lowvram-8gb' in out
    assert "# vae is unset  # from default" in out
    assert tomllib.loads(out)["network"]["target_modules"] == ["to_k", "to_q", "to_v", "to_out.0"]
    code, plain, _ = cli("config", "show", "--preset", "sd21-floorplan")
    assert code == 0 and tomllib.loads(plain)["train"]["learning_rate"] == 5e-5


def test_validate_reports_every_error_with_exit_2_and_no_traceback(cli, tmp_path: Path) -> None:
    bad = write(tmp_path / "bad.toml", '[train]\nlearning_rat = 1e-4\n[network]\nnetwork_dim = 0\n'
                                       '[data]\ntrain_data_dir = "imgs"\n')
    code, out, err = cli("config", "validate", str(bad))
    assert code == 2
    assert f"{bad}: unknown key 'train.learning_rat'; did you mean 'train.learning_rate'?" in err
    assert f"{bad}: network.network_dim = 0: Input should be greater than or equal to 1 (allowed: an integer, " \
           "≥ 1 and ≤ 1024)" in err
    assert "Traceback" not in err and out == ""


def test_validate_checks_paths_and_strict_warnings(cli, tmp_path: Path) -> None:
    f = write(tmp_path / "run.toml", f'[data]\ntrain_data_dir = "{tmp_path / "missing"}"\n')
    code, _, err = cli("config", "validate", str(f))
    assert code == 2 and f"data.train_data_dir: {tmp_path / 'missing'}: not found" in err
    code, out, _ = cli("config", "validate", str(f), "--no-paths")
    assert code == 0 and out.startswith(f"ok: {f} (0 warnings)")
    warn = write(tmp_path / "warn.toml", "[train]\ntext_encoder_lr = 1e-5\n")
    code, out, err = cli("config", "validate", str(warn), "--no-paths")
    assert code == 0 and "warning:" in err and "train.text_encoder_lr" in err
    code, _, err = cli("config", "validate", str(warn), "--no-paths", "--strict")
    assert code == 2 and "--strict treats warnings as errors" in err


def test_schema_is_json_schema(cli) -> None:
    code, out, _ = cli("config", "schema")
    schema = json.loads(out)
    assert code == 0 and schema["title"] == "LorakitConfig"
    assert schema["$defs"]["NetworkSection"]["properties"]["network_dim"]["maximum"] == 1024


def test_presets_lists_them(cli) -> None:
    code, out, _ = cli("config", "presets")
    assert code == 0 and out.splitlines()[0].startswith("difference-slider") and "sd21-floorplan" in out


def test_import_writes_toml_and_lists_unmapped(cli, tmp_path: Path) -> None:
    src = write(tmp_path / "kohya.json", json.dumps({"learning_rate": 1e-4, "network_dim": 8, "clip_skip": 2,
                                                    "logging_dir": "", "epoch": 3}))
    out_file = tmp_path / "lk.toml"
    code, _, err = cli("config", "import", str(src), "--out", str(out_file))
    assert code == 0 and "unsupported:" not in err
    assert f"wrote {out_file}: " in err and "0 unsupported" in err
    values = tomllib.loads(out_file.read_text())
    assert values["network"]["network_dim"] == 8 and values["train"]["clip_skip"] == 2  # sd-scripts --clip_skip
    # lora_gui.py train_model: epoch counts only when max_train_steps is 0; it is absent here, so the GUI widget's
    # 1600 (class_basic_training.py) reaches sd-scripts, and epoch never becomes max_train_epochs
    assert values["train"]["max_train_steps"] == 1600 and "max_train_epochs" not in values["train"]
    code, _, err = cli("config", "import", str(src), "--out", str(out_file))
    assert code == 2 and "already exists" in err  # never overwritten without --force
    code, out, _ = cli("config", "validate", str(out_file), "--no-paths")
    assert code == 0


def test_import_strict_exits_2_only_with_an_unsupported_key(cli, tmp_path: Path) -> None:
    ok = write(tmp_path / "ok.toml", "learning_rate = 1e-4\nnetwork_dim = 8\nlogging_dir = \"logs\"\n")
    code, out, err = cli("config", "import", str(ok), "--strict")
    assert code == 0 and tomllib.loads(out)["train"]["learning_rate"] == 1e-4  # logging_dir is inert
    bad = write(tmp_path / "bad.toml", "learning_rate = 1e-4\nloss_type = \"huber\"\n")
    code, _, err = cli("config", "import", str(bad), "--strict")
    assert code == 2 and "unsupported: loss_type = 'huber'" in err and "1 setting(s) kohya would use" in err
    code, _, _ = cli("config", "import", str(bad))  # without --strict the difference is accepted
    assert code == 0


def test_import_report_lists_every_group(cli, tmp_path: Path) -> None:
    src = write(tmp_path / "t.toml", 'learning_rate = 1e-4\nlogging_dir = "logs"\nloss_type = "huber"\n')
    code, _, err = cli("config", "import", str(src), "--report")
    assert code == 0
    assert "mapped: learning_rate = 0.0001 → train.learning_rate = 0.0001" in err
    assert "inert: logging_dir = 'logs': lorakit logs into the run folder" in err
    assert "unsupported: loss_type = 'huber': lorakit trains the L2 (MSE) loss only" in err
    assert "1 mapped, 1 inert, 1 unsupported" in err
    code, _, err = cli("config", "import", str(src))  # without --report only the unsupported keys are listed
    assert "mapped: learning_rate" not in err and "inert: logging_dir" not in err and "unsupported: loss_type" in err


def test_import_of_a_dataset_toml_as_the_main_file_exits_2(cli, tmp_path: Path) -> None:
    dataset = write(tmp_path / "dataset.toml", '[general]\nshuffle_caption = true\n[[datasets]]\nresolution = 512\n'
                                               '  [[datasets.subsets]]\n  image_dir = "/data/a"\n')
    code, out, err = cli("config", "import", str(dataset))
    assert code == 2 and out == "" and f"--dataset-toml {dataset}" in err and "Traceback" not in err


def test_invalid_import_writes_nothing(cli, tmp_path: Path) -> None:
    # one value lorakit cannot take is listed as not mapped (the rest imports); a config that cannot run is refused
    src = write(tmp_path / "kohya.json", json.dumps({"learning_rate": 0, "unet_lr": 0, "text_encoder_lr": 0}))
    out_file = tmp_path / "lk.toml"
    code, out, err = cli("config", "import", str(src), "--out", str(out_file))
    assert code == 2 and "every learning rate is 0" in err and "Traceback" not in err
    assert not out_file.exists() and list(tmp_path.iterdir()) == [src]


def test_import_of_unreadable_inputs_exits_2(cli, tmp_path: Path) -> None:
    good = write(tmp_path / "train.toml", "learning_rate = 1e-4\n")
    latin = tmp_path / "latin.toml"
    latin.write_bytes('output_name = "caf\xe9"\n'.encode("latin-1"))
    for args in ([str(tmp_path)], [str(latin)], [str(good), "--dataset-toml", str(latin)]):
        code, _, err = cli("config", "import", *args)
        assert code == 2 and "Traceback" not in err and str(Path(args[-1])) in err


def test_migrate_prints_the_new_form(cli, tmp_path: Path) -> None:
    old = write(tmp_path / "old.toml", "learning_rate = 2e-4\n")
    code, out, err = cli("config", "migrate", str(old))
    assert code == 0 and tomllib.loads(out) == {"version": 3, "train": {"learning_rate": 2e-4}}
    assert "migrated config version 0 → 1" in err


def test_plan_prints_steps(cli, tmp_path: Path) -> None:
    from PIL import Image

    folder = tmp_path / "img" / "4_toy"
    folder.mkdir(parents=True)
    for i in range(5):
        Image.new("RGB", (64, 64), (i * 50, 0, 0)).save(folder / f"{i}.png")
    f = write(tmp_path / "run.toml", f'[data]\ntrain_data_dir = "{(tmp_path / "img").as_posix()}"\nresolution = 64\n'
                                     'min_bucket_reso = 64\n[train]\ntrain_batch_size = 2\nmax_train_epochs = 3\n'
                                     'lr_warmup_ratio = 0.1\n[output]\nsave_every_n_steps = 10\n'
                                     f'output_dir = "{(tmp_path / "runs").as_posix()}"\n')
    code, out, _ = cli("plan", str(f))
    assert code == 0
    lines = out.splitlines()
    assert f"  {folder}: 5 images × 4 repeats = 20 (train)" in lines
    assert "steps per epoch: 10" in lines and "total steps: 30" in lines and "warm-up steps: 3" in lines
    assert "saves: 10, 20 (2) + final at 30" in lines
    code, _, err = cli("plan", str(f), "--set", "data.train_data_dir=nowhere")
    assert code == 2 and "data.train_data_dir: nowhere: not found" in err


def test_messages_with_brackets_print_verbatim(cli, tmp_path: Path) -> None:
    odd = tmp_path / "[bold]"
    odd.mkdir()
    f = write(odd / "run.toml", "[data]\nimage_size = [500, 500]\n")
    code, _, err = cli("config", "validate", str(f), "--no-paths")
    assert code == 2 and "Traceback" not in err
    assert f"{f}: data: image size 500x500 is not a multiple of bucket_reso_steps = 64" in err
    code, _, err = cli("config", "validate", str(f), "--no-paths", "--set", "data=3")
    assert "(allowed: a table [data] of settings)" in err


def test_import_of_a_traintrain_preset_with_blanks(cli, tmp_path: Path) -> None:
    """TrainTrain's shipped iLECO preset has empty prompts: it imports, and the blank is named in the output and
    the file's header; the run needs it set (validate refuses until then)."""
    src = write(tmp_path / "iLECO.json", json.dumps({
        "network_type": "lierla", "network_rank": "4", "network_alpha": "8", "mode": "iLECO",
        "train_iterations": "300", "train_learning_rate": "5e-4", "original prompt": "", "target prompt": "",
        "network_blocks(BASE = TextEncoder)": ["BASE", "IN04", "OUT03"]}))
    out = tmp_path / "ileco.toml"
    code, _, err = cli("config", "import", str(src), "--out", str(out))
    assert code == 0, err
    assert "to fill in before training: mode.original_prompt" in err
    text = out.read_text(encoding="utf-8")
    assert "#   mode.original_prompt: the concept to edit" in text
    values = tomllib.loads(text)
    assert values["mode"] == {"type": "ileco"} and values["network"]["blocks"] == ["IN04", "OUT03"]
    assert "train_text_encoder" not in values["network"]
    code, _, err = cli("config", "show", str(out))
    assert code == 2 and "ileco needs original_prompt" in err
    code, shown, err = cli("config", "show", str(out), "--set", 'mode.original_prompt="cat"')
    assert code == 0, err
    assert 'original_prompt = "cat"' in shown
