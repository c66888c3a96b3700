"""Sample prompts in kohya's line format (torch-free, so config validation can check them).

A line is the prompt, then options each introduced by " --": `--n` negative prompt, `--w`/`--h` size, `--s`
steps, `--l` guidance scale, `--d` seed; e.g. `a cat --n blurry --w 512 --h 768 --s 30 --l 6.5 --d 3`.
Options are matched case-insensitively, a repeated option's last value wins (as in kohya). Unlike kohya, which logs
and skips a segment it cannot parse, lorakit refuses it: a typo would otherwise render something else silently.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..config.schema import LorakitConfig

MIN_SIZE, MAX_SIZE = 64, 4096  # as SampleSection.width/height
MAX_STEPS = 1000
# kohya's options that lorakit does not implement: refused, so the sample is never silently different
KOHYA_ONLY = {
    "ss": "a per-prompt sampler (lorakit renders with the model's own scheduler)",
    "g": "distilled guidance (FLUX-style models)",
    "cn": "a ControlNet image",
    "ctr": "CFG truncation",
    "rcfg": "renormalised CFG",
    "fs": "a flow-matching shift",
    "am": "attention-mask weights",
}
OPTION = re.compile(r"(?P<name>[A-Za-z]+)(?:\s+(?P<value>.*))?$", re.S)


class PromptError(ValueError):
    """A prompt line that cannot be rendered as written; the message names the option."""


@dataclass(frozen=True)
class SamplePrompt:
    """One sample image's settings, every option resolved."""

    prompt: str
    negative_prompt: str
    width: int
    height: int
    steps: int
    guidance_scale: float
    seed: int


def _size(flag: str, value: str) -> int:
    if not re.fullmatch(r"\d+", value):
        raise PromptError(f"--{flag} {value}: must be a whole number of pixels")
    n = int(value)
    if n % 8 or not MIN_SIZE <= n <= MAX_SIZE:
        raise PromptError(f"--{flag} {n}: must be a multiple of 8 between {MIN_SIZE} and {MAX_SIZE}")
    return n


def _steps(value: str) -> int:
    if not re.fullmatch(r"\d+", value) or not 1 <= int(value) <= MAX_STEPS:
        raise PromptError(f"--s {value}: steps must be a whole number from 1 to {MAX_STEPS}")
    return int(value)


def _scale(value: str) -> float:
    try:
        scale = float(value)
    except ValueError:
        scale = -1.0
    if not re.fullmatch(r"[\d.]+", value) or not math.isfinite(scale) or scale < 0:
        raise PromptError(f"--l {value}: the guidance scale must be a number ≥ 0 (e.g. 7.5)")
    return scale


def _seed(value: str) -> int:
    if not re.fullmatch(r"\d+", value) or int(value) >= 2**63:
        raise PromptError(f"--d {value}: the seed must be a whole number from 0 to 2**63 - 1")
    return int(value)


def _negative(value: str) -> str:
    if not value:
        raise PromptError("--n: give the negative prompt after it (e.g. --n blurry)")
    return value


PARSERS = {"n": ("negative_prompt", _negative), "w": ("width", lambda v: _size("w", v)),
           "h": ("height", lambda v: _size("h", v)), "s": ("steps", _steps), "l": ("guidance_scale", _scale),
           "d": ("seed", _seed)}


def parse_line(line: str) -> dict[str, Any]:
    """The prompt and the options a line sets: {"prompt": ..., "width": 512, ...} (absent options left out)."""
    prompt, *segments = line.strip().split(" --")
    prompt = prompt.strip()
    if not prompt or prompt.startswith("--"):
        raise PromptError("no prompt before the options")
    fields: dict[str, Any] = {"prompt": prompt}
    for segment in segments:
        match = OPTION.match(segment.strip())
        name = match.group("name").lower() if match else ""
        value = ((match.group("value") if match else None) or "").strip()
        if name in PARSERS:
            key, parse = PARSERS[name]
            fields[key] = parse(value)
        elif name in KOHYA_ONLY:
            raise PromptError(f"--{name}: kohya's option for {KOHYA_ONLY[name]} is not supported; remove it")
        else:
            raise PromptError(f"--{segment.strip()}: unknown option (lorakit reads --n, --w, --h, --s, --l, --d)")
    return fields


def file_problem(prompts_file: str) -> str | None:
    """Why a prompts file cannot be read as lines, from its name alone: kohya's structured formats."""
    if Path(prompts_file).suffix.lower() in (".toml", ".json"):
        return (f"{prompts_file}: kohya's .toml/.json prompt files are not read; use a text file with one prompt per "
                "line, or sample.prompts")
    return None


def prompt_lines(prompts: list[str], prompts_file: str | None) -> list[tuple[str, str]]:
    """(where, text) of every prompt: `sample.prompts` entries, then the prompts file's lines (UTF-8; empty lines
    and lines starting with '#' skipped). `where` is "sample.prompts[0]" or "<file>:<line number>". A kohya
    .toml/.json prompt file raises PromptError."""
    lines = [(f"sample.prompts[{i}]", p) for i, p in enumerate(prompts)]
    if prompts_file and file_problem(prompts_file):
        raise PromptError(f"sample.prompts_file: {file_problem(prompts_file)}")
    if prompts_file:
        text = Path(prompts_file).read_text(encoding="utf-8")
        for number, raw in enumerate(text.splitlines(), 1):
            stripped = raw.strip()
            if stripped and not stripped.startswith("#"):
                lines.append((f"{prompts_file}:{number}", stripped))
    return lines


def line_problems(lines: list[tuple[str, str]]) -> list[str]:
    """One message per line that cannot be parsed, naming the line and its text."""
    problems = []
    for where, text in lines:
        try:
            parse_line(text)
        except PromptError as exc:
            problems.append(f"{where} ({text!r}): {exc}")
    return problems


def resolve_prompts(cfg: LorakitConfig) -> list[SamplePrompt]:
    """Every sample prompt with its options over the section's defaults (size: the training size when unset).
    Raises PromptError listing every bad line."""
    s = cfg.sample
    lines = prompt_lines(s.prompts, s.prompts_file)
    problems = line_problems(lines)
    if not lines:
        problems.append(f"sample.prompts_file: {s.prompts_file} holds no prompt (only empty or '#' lines)")
    if problems:
        raise PromptError("\n".join(problems))
    train_w, train_h = cfg.data.max_size
    defaults = {"negative_prompt": s.negative_prompt, "width": s.width or train_w, "height": s.height or train_h,
                "steps": s.steps, "guidance_scale": s.guidance_scale, "seed": s.seed}
    return [SamplePrompt(**(defaults | parse_line(text))) for _, text in lines]


def sample_schedule(cfg: LorakitConfig, total_steps: int, steps_per_epoch: int) -> tuple[int, ...]:
    """Steps strictly between 0 and `total_steps` at which samples are rendered (every N steps, and the ends of
    every N epochs); step 0 and the final step are always rendered besides. Empty when sampling is off."""
    s = cfg.sample
    if not (s.prompts or s.prompts_file):
        return ()
    steps = set(range(s.every_n_steps, total_steps, s.every_n_steps)) if s.every_n_steps else set()
    if s.every_n_epochs and steps_per_epoch:
        every = s.every_n_epochs * steps_per_epoch
        steps |= set(range(every, total_steps, every))
    return tuple(sorted(steps))
