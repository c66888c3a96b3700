"""lorakit.batch.remote against a real `rclone serve webdav` (tests/batch/rclone_server.py).

Expected behaviour comes from rclone's docs: `copy` skips files that are already identical (on webdav, which keeps
no modtimes, identical means the same size; https://rclone.org/commands/rclone_copy/), `check --one-way` compares
sizes and hashes where both sides share one (https://rclone.org/commands/rclone_check/), `delete` removes files and
keeps folders (https://rclone.org/commands/rclone_delete/), exit codes https://rclone.org/docs/#exit-code.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from lorakit.batch.remote import Remote, RcloneError, RemoteEntry, classify

from .rclone_server import ServedRemote, free_port, rclone_binary, webdav_remote  # noqa: F401 (fixture)


def files(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def folders(folder: Path) -> set[str]:
    return {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_dir()}


def plant(folder: Path, tree: dict[str, bytes]) -> None:
    for name, data in tree.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(data)


JOB = {"img0.png": b"\x89PNG" + bytes(range(200)), "img0.txt": b"a red block", "sub/img1.png": b"\x89PNG" * 300,
       "sub/deeper/img2.txt": b"blue"}


def remote_for(server: ServedRemote, **kwargs) -> Remote:
    return Remote(server.root, env=server.env, **kwargs)


def test_download_verifies_and_delete_keeps_the_folders(webdav_remote: ServedRemote, tmp_path: Path) -> None:
    plant(webdav_remote.folder / "inbox/job1", JOB)
    remote = remote_for(webdav_remote)
    result = remote.download("inbox/job1", tmp_path / "local")
    assert files(tmp_path / "local") == JOB
    assert result.transfers == len(JOB)
    assert result.hashed is False  # webdav has no hash: rclone's check compares sizes only and still exits 0
    remote.delete_files("inbox/job1")
    assert files(webdav_remote.folder / "inbox/job1") == {}
    assert folders(webdav_remote.folder / "inbox/job1") == {"sub", "sub/deeper"}
    remote.delete_files("inbox/job1")  # again (nothing left) and on a missing folder: no error
    remote.delete_files("inbox/no-such-job")


def test_verify_names_a_file_that_differs(webdav_remote: ServedRemote, tmp_path: Path) -> None:
    plant(webdav_remote.folder / "inbox/job1", JOB)
    remote = remote_for(webdav_remote)
    remote.download("inbox/job1", tmp_path / "local")
    (tmp_path / "local/sub/img1.png").write_bytes(b"cut short")
    with pytest.raises(RcloneError) as caught:
        remote.verify(remote.path("inbox/job1"), str(tmp_path / "local"))
    assert "sub/img1.png: sizes differ" in str(caught.value)
    assert (caught.value.kind, caught.value.fatal) == ("other", False)


def test_upload_twice_transfers_nothing_the_second_time(webdav_remote: ServedRemote, tmp_path: Path) -> None:
    plant(tmp_path / "out", JOB)
    remote = remote_for(webdav_remote)
    assert remote.upload(tmp_path / "out", "outbox/job1").transfers == len(JOB)
    served = webdav_remote.folder / "outbox/job1"
    assert files(served) == JOB
    mtimes = {p: p.stat().st_mtime_ns for p in served.rglob("*") if p.is_file()}
    assert remote.upload(tmp_path / "out", "outbox/job1").transfers == 0
    assert {p: p.stat().st_mtime_ns for p in served.rglob("*") if p.is_file()} == mtimes  # nothing rewritten


def test_upload_after_a_partial_remote_file_sends_only_that_file(webdav_remote: ServedRemote, tmp_path: Path) -> None:
    plant(tmp_path / "out", {**JOB, "lora.safetensors": os.urandom(300_000)})
    remote = remote_for(webdav_remote)
    remote.upload(tmp_path / "out", "outbox/job1")
    partial = webdav_remote.folder / "outbox/job1/lora.safetensors"
    partial.write_bytes(partial.read_bytes()[:1000])  # what an interrupted transfer leaves behind
    assert remote.upload(tmp_path / "out", "outbox/job1").transfers == 1
    assert files(webdav_remote.folder / "outbox/job1") == files(tmp_path / "out")


def test_upload_after_killing_rclone_mid_transfer(webdav_remote: ServedRemote, tmp_path: Path) -> None:
    plant(tmp_path / "out", {"small.txt": b"done first", "lora.safetensors": os.urandom(8 << 20)})
    target = webdav_remote.folder / "outbox/job1/lora.safetensors"
    # --bwlimit keeps the 8 MiB transfer running (about 8 s) until the test has seen it start and killed it
    copy = subprocess.Popen([rclone_binary(), "copy", str(tmp_path / "out"), "lkt:outbox/job1", "--bwlimit", "1M",
                             "--transfers", "1"], env={**os.environ, **webdav_remote.env},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        while not target.exists() and copy.poll() is None:  # wait for the big file to start arriving
            try:
                copy.wait(timeout=0.05)
            except subprocess.TimeoutExpired:
                pass
    finally:
        copy.kill()
        copy.wait()
    assert copy.returncode < 0, "rclone finished before it could be killed: the test did not interrupt anything"
    assert files(webdav_remote.folder / "outbox/job1") != files(tmp_path / "out")
    remote_for(webdav_remote).upload(tmp_path / "out", "outbox/job1")
    assert files(webdav_remote.folder / "outbox/job1") == files(tmp_path / "out")


def test_move_claims_a_folder_once(webdav_remote: ServedRemote) -> None:
    plant(webdav_remote.folder / "inbox/job1", JOB)
    remote = remote_for(webdav_remote)
    assert remote.can_move_folders()  # webdav renames folders server-side (MOVE)
    assert remote.move("inbox/job1", "claimed/job1.worker-a") is True
    assert files(webdav_remote.folder / "claimed/job1.worker-a") == JOB
    assert not (webdav_remote.folder / "inbox/job1").exists()
    assert remote.move("inbox/job1", "claimed/job1.worker-b") is False  # another worker was first
    plant(webdav_remote.folder / "inbox/job2", {"a.txt": b"a"})
    assert remote.move("inbox/job2", "claimed/job1.worker-a") is False  # never merged into an existing folder
    assert files(webdav_remote.folder / "claimed/job1.worker-a") == JOB
    assert files(webdav_remote.folder / "inbox/job2") == {"a.txt": b"a"}
    assert remote.exists("inbox/job2") and not remote.exists("inbox/job1") and not remote.exists("nowhere/x")


def test_entries_skip_dot_names_and_a_missing_folder_is_empty(webdav_remote: ServedRemote) -> None:
    plant(webdav_remote.folder / "inbox", {"job2/a.png": b"x", "job1/a.png": b"y", ".trash/old.png": b"z",
                                           ".lease": b"w", "notes.txt": b"12345"})
    remote = remote_for(webdav_remote)
    assert remote.entries("inbox") == [RemoteEntry("job1", True, -1), RemoteEntry("job2", True, -1),
                                       RemoteEntry("notes.txt", False, 5)]
    assert remote.entries("no-such-folder") == []


def test_small_text_files_round_trip(webdav_remote: ServedRemote) -> None:
    remote = remote_for(webdav_remote)
    remote.write_text("leases/job1.json", '{"worker": "a"}\n')
    assert (webdav_remote.folder / "leases/job1.json").read_text() == '{"worker": "a"}\n'
    assert remote.read_text("leases/job1.json") == '{"worker": "a"}\n'
    assert remote.read_text("leases/job2.json") is None


def test_cleanup_on_webdav_is_unsupported_not_fatal(webdav_remote: ServedRemote) -> None:
    with pytest.raises(RcloneError) as caught:
        remote_for(webdav_remote, flags=["--retries", "1"]).cleanup()
    assert (caught.value.kind, caught.value.fatal) == ("unsupported", False)
    assert "doesn't support cleanup" in str(caught.value)


# Real failures produced here: rclone's own texts for this version, classified through the same path as in a batch.
def test_a_missing_remote_section_is_fatal_auth(webdav_remote: ServedRemote) -> None:
    with pytest.raises(RcloneError) as caught:
        Remote("nosuch:inbox", env=webdav_remote.env).entries()
    assert (caught.value.kind, caught.value.fatal) == ("auth", True)
    assert "find section in config file" in str(caught.value)
    assert "rclone listremotes" in str(caught.value)


def test_connection_refused_is_network(webdav_remote: ServedRemote) -> None:
    env = {**webdav_remote.env, "RCLONE_CONFIG_LKT_URL": f"http://127.0.0.1:{free_port()}"}  # nothing listens
    with pytest.raises(RcloneError) as caught:
        Remote("lkt:inbox", env=env, flags=["--retries", "1", "--low-level-retries", "1"]).entries()
    assert (caught.value.kind, caught.value.fatal) == ("network", False)
    assert "connection refused" in str(caught.value)


def test_a_missing_directory_text_and_exit_code(webdav_remote: ServedRemote) -> None:
    done = subprocess.run([rclone_binary(), "lsjson", "lkt:no-such-folder"], capture_output=True, text=True,
                          env={**os.environ, **webdav_remote.env})
    assert done.returncode == 3  # "Directory not found" in rclone's exit code table
    assert classify(done.returncode, done.stderr) == ("not_found", False)


def test_rclone_not_installed_is_fatal_with_a_hint() -> None:
    with pytest.raises(RcloneError) as caught:
        Remote("lkt:", rclone="/nonexistent/rclone").entries()
    assert caught.value.fatal and "https://rclone.org/install/" in str(caught.value)


# Recorded texts from rclone users' reports (exit codes there were not shown; 2 is "other" in rclone v1.60's table).
RECORDED = [
    # https://github.com/rclone/rclone/pull/6810 (Drive, "Before" log)
    ("2023-03-06 16:49:31 ERROR : Test.mkv: Failed to copy: googleapi: Error 403: The user's Drive storage quota has "
     "been exceeded., storageQuotaExceeded", "quota", True),
    # https://github.com/rclone/rclone/issues/615
    ("2016/08/12 13:46:29 file: Failed to copy: googleapi: Error 403: The user has exceeded their Drive storage "
     "quota, quotaExceeded", "quota", True),
    # https://github.com/rclone/rclone/issues/3328
    ("2019/07/05 08:37:05 ERROR : test1.mkv: Failed to copy: googleapi: Error 403: User rate limit exceeded., "
     "userRateLimitExceeded", "rate_limit", False),
    # https://github.com/rclone/rclone/issues/3200 (title)
    ("ERROR : error googleapi: Error 429: Rate Limit Exceeded, rateLimitExceeded", "rate_limit", False),
    # https://github.com/rclone/rclone/issues/4250
    ('2020/05/19 15:08:34 Failed to create file system for "spi-drive:audit/2019/README.pdf": couldn\'t find root '
     'directory ID: Get https://www.googleapis.com/drive/v3/files/root?alt=json: oauth2: cannot fetch token: 400 Bad '
     'Request\nResponse: {\n  "error": "invalid_grant",\n  "error_description": "Bad Request"\n}', "auth", True),
    # https://github.com/rclone/rclone/issues/366 (B2)
    ("x: Failed to copy: Failed to upload: Authorization token has expired (401 expired_auth_token)", "auth", True),
]


@pytest.mark.parametrize(("stderr", "kind", "fatal"), RECORDED)
def test_classify_recorded_texts(stderr: str, kind: str, fatal: bool) -> None:
    assert classify(2, stderr) == (kind, fatal)


def test_a_file_name_in_an_info_line_does_not_change_the_kind() -> None:
    stderr = ("2026/12/02 01:24:06 INFO  : quotaExceeded-429.png: Copied (new)\n"
              "2026/12/02 01:24:07 Failed to copy: dial tcp 127.0.0.1:1: connect: connection refused\n")
    assert classify(5, stderr) == ("network", False)


# https://rclone.org/docs/#exit-code: 3 directory not found, 4 file not found, 5 temporary, 7 fatal (retries won't
# fix it), 8 transfer limit (--max-transfer), 9 no files transferred (--error-on-no-transfer); 1, 2 syntax / other.
BY_EXIT_CODE = [(1, "other", False), (2, "other", False), (3, "not_found", False), (4, "not_found", False),
                (5, "network", False), (6, "other", False), (7, "other", True), (8, "quota", True), (9, "other", False)]


@pytest.mark.parametrize(("code", "kind", "fatal"), BY_EXIT_CODE)
def test_classify_by_exit_code_alone(code: int, kind: str, fatal: bool) -> None:
    assert classify(code, "") == (kind, fatal)


def test_error_message_hides_secrets_and_keeps_the_last_errors() -> None:
    stderr = "\n".join([f"2026/12/02 01:25:09 ERROR : Attempt {i}/3 failed with 1 errors and: boom" for i in (1, 2, 3)]
                       + ["2026/12/02 01:25:09 NOTICE: 1 differences found"])
    err = RcloneError(["rclone", "lsjson", ":webdav,url=http://h,pass=s3cret:inbox"], 2, stderr)
    assert "s3cret" not in str(err) and "lsjson" in str(err)
    assert err.stderr_lines == ["boom"] and "NOTICE" not in str(err)
