"""Writing a `lorakit batch` env file and its base config for the tiny model (shared by the batch tests)."""

from __future__ import annotations

from pathlib import Path

BASE = """version = 3
[model]
pretrained_model_name_or_path = "tiny-sd1"
[data]
resolution = 64
[network]
network_dim = 4
[train]
max_train_steps = 2
learning_rate = 0.05
mixed_precision = "no"
{train_extra}
[checkpoint]
at_end = false
every_n_steps = 0
{extra}
"""


def write_env(tmp: Path, remote: str = "", env_extra: str = "", train_extra: str = "", base_extra: str = "",
              storage_extra: str = "") -> Path:
    """tmp/env.toml over tmp/base.toml; working folder tmp/work (created), runs in tmp/runs."""
    (tmp / "work").mkdir(exist_ok=True)
    (tmp / "base.toml").write_text(BASE.format(train_extra=train_extra, extra=base_extra), encoding="utf-8")
    storage = f'[storage]\nrclone_remote = "{remote}"\nremote_path = "lorakit"\n{storage_extra}\n' if remote else ""
    env = tmp / "env.toml"
    env.write_text(f"""version = 3
[batch]
base_config = "base.toml"
working_dir = "{(tmp / 'work').as_posix()}"
output_suffix = "v1"
{env_extra}
{storage}
[output]
output_dir = "{(tmp / 'runs').as_posix()}"
""", encoding="utf-8")
    return env
