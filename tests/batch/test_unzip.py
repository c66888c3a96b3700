"""Safe extraction of training ZIPs (spec §4.2 "ZIP解凍": extract in place, remove the ZIP after success).

Hostile ZIPs are built here with the standard zipfile module; the byte offsets used to patch them come from the ZIP
format (PKWARE APPNOTE §4.3.7 local header, §4.3.12 central directory header). Every refusal test snapshots the whole
parent of the working folder before and after, so a write outside the working folder fails the test.
"""

from __future__ import annotations

import os
import stat
import zipfile
from pathlib import Path

import pytest

from lorakit.batch.unzip import ZipOutcome, extract_zips


def _zip(path: Path, entries: dict[str, bytes], method: int = zipfile.ZIP_DEFLATED) -> Path:
    with zipfile.ZipFile(path, "w", method) as archive:
        for name, data in entries.items():
            archive.writestr(name, data)
    return path


def _snapshot(root: Path) -> dict[str, bytes | None]:
    """Every path under root (files with their bytes, folders and links as None)."""
    found: dict[str, bytes | None] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            full = Path(dirpath, name)
            is_plain_file = full.is_file() and not full.is_symlink()
            found[str(full.relative_to(root))] = full.read_bytes() if is_plain_file else None
    return found


@pytest.fixture()
def work(tmp_path: Path) -> Path:
    folder = tmp_path / "work"
    folder.mkdir()
    (tmp_path / "neighbour.txt").write_text("outside the working folder")
    return folder


def _refused(work: Path, zip_path: Path, *words: str, **limits: int) -> ZipOutcome:
    """Run extract_zips on a hostile ZIP and check the refusal leaves everything as it was."""
    before = _snapshot(work.parent)
    [outcome] = extract_zips(work, **limits)
    assert _snapshot(work.parent) == before, "a refused ZIP changed files (inside or outside the working folder)"
    assert not outcome.ok and outcome.folder is None and outcome.zip == zip_path
    assert zip_path.exists()
    assert sorted(p.name for p in work.iterdir()) == [zip_path.name], "no target or temp folder may be left"
    for word in words:
        assert word in outcome.reason, outcome.reason
    return outcome


def test_path_traversal_is_refused(work: Path) -> None:
    z = _zip(work / "cat.zip", {"cat/ok.png": b"x", "../evil.txt": b"evil"})
    _refused(work, z, "'../evil.txt'", "..")


def test_absolute_path_is_refused(work: Path) -> None:
    # an absolute path that points into the snapshotted parent, so a write there would be seen
    evil = str(work.parent / "evil_abs.txt")
    z = _zip(work / "cat.zip", {"ok.png": b"x", evil: b"evil"})
    _refused(work, z, evil, "absolute")


@pytest.mark.parametrize("entry", ["C:\\evil.txt", "C:/evil.txt", "..\\evil.txt", "sub\\evil.txt"])
def test_windows_paths_are_refused(work: Path, entry: str) -> None:
    z = _zip(work / "cat.zip", {"ok.png": b"x", entry: b"evil"})
    outcome = _refused(work, z, repr(entry))
    assert "absolute" in outcome.reason or "backslash" in outcome.reason


def test_symlink_entry_is_refused(work: Path) -> None:
    z = work / "cat.zip"
    with zipfile.ZipFile(z, "w") as archive:
        archive.writestr("ok.png", b"x")
        link = zipfile.ZipInfo("link.png")
        link.create_system = 3  # Unix: the mode lives in external_attr >> 16
        link.external_attr = (stat.S_IFLNK | 0o777) << 16
        archive.writestr(link, str(work.parent / "neighbour.txt"))
    _refused(work, z, "'link.png'", "symbolic link")


def test_zip_bomb_over_max_bytes_is_refused(work: Path) -> None:
    z = _zip(work / "bomb.zip", {"zeros.bin": bytes(50 * 2**20)})
    assert z.stat().st_size < 2**20  # it really is a bomb: tiny ZIP, 50 MiB declared
    _refused(work, z, "52428800 bytes", "limit", max_bytes=2**20)


def test_too_many_entries_is_refused(work: Path) -> None:
    z = _zip(work / "many.zip", {f"{i}.txt": b"x" for i in range(11)})
    _refused(work, z, "11 entries", "10", max_files=10)


def test_header_that_lies_about_its_size_is_refused(work: Path) -> None:
    """The central directory (what readers trust) says 100 bytes; the compressed stream holds 1 MiB."""
    z = work / "liar.zip"
    with zipfile.ZipFile(z, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("ok.png", b"fine")
        archive.writestr("big.bin", bytes(2**20))
        archive.getinfo("big.bin").file_size = 100  # written into the central directory at close
    with zipfile.ZipFile(z) as check:
        assert check.getinfo("big.bin").file_size == 100
    _refused(work, z, "'big.bin'", "declared size of 100 bytes")


def test_encrypted_entry_is_refused(work: Path) -> None:
    z = work / "secret.zip"
    with zipfile.ZipFile(z, "w") as archive:
        archive.writestr("ok.png", b"x")
        archive.writestr("secret.png", b"y")
        archive.getinfo("secret.png").flag_bits |= 0x1  # general purpose bit 0: encrypted
    _refused(work, z, "'secret.png'", "encrypted (password-protected")


def test_truncated_zip_is_refused(work: Path) -> None:
    z = _zip(work / "cut.zip", {"a.png": os.urandom(4096), "b.png": os.urandom(4096)})
    z.write_bytes(z.read_bytes()[:5000])  # the end-of-central-directory record is gone
    _refused(work, z, "corrupt or truncated")


def test_crc_error_midway_removes_the_partial_extraction(work: Path) -> None:
    """The first entry is written before the second fails its CRC: the temp folder must go too."""
    z = _zip(work / "bad.zip", {"a.png": b"A" * 1000, "b.png": b"B" * 1000}, zipfile.ZIP_STORED)
    data = bytearray(z.read_bytes())
    at = data.index(b"B" * 1000)
    data[at + 10] = ord("C")  # stored data: flip one byte of b.png, its CRC no longer matches
    z.write_bytes(bytes(data))
    _refused(work, z, "corrupt", "b.png")


def test_folder_zip_extracts_without_doubling_the_top_level(work: Path) -> None:
    z = _zip(work / "cat.zip", {"cat/": b"", "cat/10_cat/a.png": b"A", "cat/10_cat/a.txt": b"a cat",
                                "__MACOSX/cat/10_cat/._a.png": b"junk", "cat/.DS_Store": b"junk"})
    [outcome] = extract_zips(work)
    assert outcome == ZipOutcome(z, True, work / "cat", "")
    assert not z.exists()
    assert _snapshot(work) == {"cat": None, "cat/10_cat": None, "cat/10_cat/a.png": b"A",
                               "cat/10_cat/a.txt": b"a cat"}


def test_flat_zip_and_other_top_level_go_under_the_zip_name(work: Path) -> None:
    flat = _zip(work / "dog.zip", {"a.png": b"A", "sub/b.png": b"B"})
    other = _zip(work / "cow.zip", {"10_cow/c.png": b"C"})  # one top folder, but not named after the ZIP: kept
    outcomes = extract_zips(work)
    assert [(o.zip, o.ok, o.folder) for o in outcomes] == [(other, True, work / "cow"), (flat, True, work / "dog")]
    assert _snapshot(work) == {"dog": None, "dog/a.png": b"A", "dog/sub": None, "dog/sub/b.png": b"B",
                               "cow": None, "cow/10_cow": None, "cow/10_cow/c.png": b"C"}


def test_unicode_names_extract(work: Path) -> None:
    z = _zip(work / "写真.zip", {"写真/ねこ.png": b"neko", "写真/café.txt": "キャプション".encode()})
    [outcome] = extract_zips(work)
    assert outcome.ok and outcome.folder == work / "写真" and not z.exists()
    assert (work / "写真" / "ねこ.png").read_bytes() == b"neko"
    assert (work / "写真" / "café.txt").read_text() == "キャプション"


def test_existing_target_folder_is_refused_and_untouched(work: Path) -> None:
    (work / "cat").mkdir()
    (work / "cat" / "mine.png").write_bytes(b"keep")
    z = _zip(work / "cat.zip", {"cat/mine.png": b"overwrite", "cat/new.png": b"new"})
    before = _snapshot(work.parent)
    [outcome] = extract_zips(work)
    assert _snapshot(work.parent) == before
    assert not outcome.ok and "already exists" in outcome.reason and str(work / "cat") in outcome.reason


def test_only_top_level_non_hidden_zips_and_bad_ones_do_not_stop_good_ones(work: Path) -> None:
    (work / "nested").mkdir()
    _zip(work / "nested" / "inner.zip", {"a.png": b"A"})
    _zip(work / ".hidden.zip", {"a.png": b"A"})
    bad = _zip(work / "bad.zip", {"../evil.txt": b"evil"})
    good = _zip(work / "good.zip", {"a.png": b"A"})
    outcomes = extract_zips(work)
    assert [(o.zip, o.ok) for o in outcomes] == [(bad, False), (good, True)]
    assert sorted(p.name for p in work.iterdir()) == [".hidden.zip", "bad.zip", "good", "nested"]
    assert (work / "nested" / "inner.zip").exists()
