"""Build CLIP's `vocab.json` + `merges.txt` (the Hugging Face layout) from OpenAI's BPE merges file.

The shipped files in `src/lorakit/families/configs/clip/` were made with::

    python tests/families/clip_bpe.py bpe_simple_vocab_16e6.txt.gz src/lorakit/families/configs/clip

where the `.gz` comes from the `open_clip_torch` wheel on PyPI (MIT). The vocabulary is a pure function of the
merges, so `test_single_file.py` re-derives it from the shipped `merges.txt` and compares.
"""

from __future__ import annotations

import gzip
import json
import sys
from pathlib import Path

N_MERGES = 49152 - 256 - 2  # CLIP uses only the first 48,894 merges
SPECIAL_TOKENS = ["<|startoftext|>", "<|endoftext|>"]


def byte_unicode_chars() -> list[str]:
    """The 256 printable stand-ins for bytes that byte-level BPE uses, in CLIP's (GPT-2's) order."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    chars = [chr(b) for b in printable]
    extra = 0
    for b in range(256):
        if b not in printable:
            chars.append(chr(256 + extra))
            extra += 1
    return chars


def vocab_from_merges(merges: list[str]) -> dict[str, int]:
    """CLIP's token → id table: bytes, bytes + `</w>`, each merge joined, then the two special tokens."""
    base = byte_unicode_chars()
    tokens = base + [c + "</w>" for c in base] + [m.replace(" ", "") for m in merges] + SPECIAL_TOKENS
    return {tok: i for i, tok in enumerate(tokens)}


def read_bpe_gz(path: Path) -> list[str]:
    """The merges CLIP uses, one `a b` string each, from OpenAI's `bpe_simple_vocab_16e6.txt.gz`."""
    lines = gzip.open(path, "rt", encoding="utf-8").read().split("\n")
    return lines[1 : N_MERGES + 1]


def write_tokenizer_files(merges: list[str], out: Path) -> None:
    """Write `vocab.json` and `merges.txt` into `out`."""
    out.mkdir(parents=True, exist_ok=True)
    vocab = vocab_from_merges(merges)
    (out / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False, separators=(",", ":")), encoding="utf-8")
    (out / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")


if __name__ == "__main__":
    write_tokenizer_files(read_bpe_gz(Path(sys.argv[1])), Path(sys.argv[2]))
