"""Data is pure: everything but the cache works without importing torch."""

from __future__ import annotations

import subprocess
import sys

PURE = ["buckets", "scan", "captions", "sampler", "pipeline", "transforms", "preprocess", "settings", "example", "similarity", "prepare_log"]


def test_only_the_cache_imports_torch() -> None:
    imports = "; ".join(f"import lorakit.data.{name}" for name in PURE)
    code = f"import sys; {imports}; print(sorted(m for m in ('torch', 'diffusers', 'transformers') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
