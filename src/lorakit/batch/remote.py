"""Remote storage for `lorakit batch` through the `rclone` command: list, download, upload, claim, small files.

Every call runs rclone with an argument list (no shell) and the user's own rclone setup: `rclone.conf` or
`RCLONE_CONFIG_<NAME>_<OPTION>` environment variables (https://rclone.org/docs/#config-file). Copies are verified
with `rclone check --one-way`, which compares sizes and, where both sides share a hash (Drive: md5), hashes too.
A backend with no hash (webdav) is compared by size only: rclone logs "No common hash found - not using a hash for
checks" and "N hashes could not be checked" but exits 0, and `SyncResult.hashed` is then False.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from lorakit.errors import LorakitError

KINDS = ("quota", "auth", "not_found", "rate_limit", "network", "unsupported", "other")
FATAL_KINDS = {"quota", "auth"}  # retrying cannot help: the whole batch stops

# rclone's exit codes, https://rclone.org/docs/#exit-code and lib/exitcode/exitcode.go (v1.60: 1 syntax, 2 other; a
# 2024 commit "cmd: change exit code from 1 to 2 for syntax and usage errors" swaps the two — both "other" here).
# 5 "Temporary error (one that more retries might fix)" is mostly network trouble: "network", retried later.
_KIND_BY_EXIT = {3: "not_found", 4: "not_found", 5: "network", 7: "other", 8: "quota"}
# 7 "Fatal error (one that more retries won't fix)", 8 "Transfer exceeded - limit set by --max-transfer"
_FATAL_EXITS = {7, 8}

# Message texts, checked in this order (the first match wins; a quota 403 must not read as a rate limit).
_KIND_BY_TEXT: list[tuple[str, re.Pattern[str]]] = [
    # Drive: "googleapi: Error 403: The user's Drive storage quota has been exceeded., storageQuotaExceeded"
    # (https://github.com/rclone/rclone/pull/6810), older "The user has exceeded their Drive storage quota,
    # quotaExceeded" (https://github.com/rclone/rclone/issues/615); webdav servers answer 507 Insufficient Storage.
    ("quota", re.compile(r"storageQuotaExceeded|\bquotaExceeded|storage quota has been exceeded|exceeded their Drive "
                         r"storage quota|Insufficient Storage|No space left on device|Disk quota exceeded", re.I)),
    # Expired Drive token: "oauth2: cannot fetch token: 400 Bad Request ... "error": "invalid_grant""
    # (https://github.com/rclone/rclone/issues/4250), newer "couldn't fetch token: invalid_grant: maybe token expired?"
    # (https://github.com/rclone/rclone/issues/8547); a missing remote: "didn't find section in config file" (v1.60,
    # produced in tests/batch/test_remote.py), "couldn't find section in config file" in other versions.
    ("auth", re.compile(r"invalid_grant|401 Unauthorized|\b401\b.*unauthori[sz]ed|(didn't|couldn't|could not) find "
                        r"section in config file|empty token found|token expired|expired_auth_token", re.I)),
    # Drive: "googleapi: Error 403: User rate limit exceeded., userRateLimitExceeded"
    # (https://github.com/rclone/rclone/issues/3328), "Error 429: Rate Limit Exceeded, rateLimitExceeded"
    # (https://github.com/rclone/rclone/issues/3200).
    ("rate_limit", re.compile(r"userRateLimitExceeded|rateLimitExceeded|rate limit exceeded|Too Many Requests"
                              r"|Error 429", re.I)),
    # "webdav root '' doesn't support cleanup" (rclone v1.60 `cleanup` on webdav, produced in the tests);
    # fs.ErrorNotImplemented reads "optional feature not implemented".
    ("unsupported", re.compile(r"doesn't support|optional feature not implemented", re.I)),
    # Go's net errors: "dial tcp 127.0.0.1:1: connect: connection refused" (produced in the tests), "no such host".
    ("network", re.compile(r"connection refused|no such host|network is unreachable|connection reset by peer"
                           r"|i/o timeout|TLS handshake timeout|dial tcp", re.I)),
    # "error listing: directory not found" (lsjson/cat/moveto of a missing path, produced in the tests),
    # fs.ErrorObjectNotFound reads "object not found".
    ("not_found", re.compile(r"directory not found|object not found|file not found", re.I)),
]

_HINTS = {
    "quota": "free space on the remote (empty its trash: `rclone cleanup {root}`) and run the batch again",
    "auth": "check the remote's login: `rclone config reconnect {name}:` for an expired token, `rclone listremotes` "
            "(or the RCLONE_CONFIG_{upper}_* variables) for a missing remote",
    "not_found": "check the path exists: `rclone lsf {root}`",
    "rate_limit": "the provider is throttling requests; the batch retries later",
    "network": "check the network and that the storage server answers, then run the batch again",
    "unsupported": "this backend does not offer that operation",
    "other": "run the command above with -vv to see more",
}
_SECRET = re.compile(r"((?:pass|password|token|secret|key|client_secret)=)[^,:]*", re.I)


def classify(exit_code: int, stderr: str) -> tuple[str, bool]:
    """(kind, fatal) of a failed rclone call: the message text decides when it is known, else the exit code.

    Only error lines count, so a file name in an INFO line ("quotaExceeded.png: Copied") cannot change the kind.
    """
    errors = "\n".join(meaningful_lines(stderr, count=1000))
    kind = next((name for name, pattern in _KIND_BY_TEXT if pattern.search(errors)), None)
    kind = kind or _KIND_BY_EXIT.get(exit_code, "other")
    return kind, kind in FATAL_KINDS or exit_code in _FATAL_EXITS


def meaningful_lines(stderr: str, count: int = 3) -> list[str]:
    """The last distinct error lines of rclone's log (plain or --use-json-log), without INFO/NOTICE chatter.

    A line that starts with neither a date nor "{" continues the one before (Go errors can span lines, e.g. an
    OAuth response body).
    """
    records: list[str] = []
    for raw in stderr.splitlines():
        line = raw.strip()
        if not line:
            continue
        if records and not re.match(r"\d{4}[/-]\d\d[/-]\d\d |\{\"", line):
            records[-1] += " " + line
        else:
            records.append(line)
    lines: list[str] = []
    for line in records:
        if line.startswith('{"'):
            try:
                entry = json.loads(line)
            except ValueError:
                entry = None
            if isinstance(entry, dict):
                if entry.get("level") not in ("error", "critical", "fatal"):
                    continue
                line = str(entry.get("msg", "")).strip()
        elif not re.search(r"\bERROR\b|\bCRITICAL\b|Failed to|Fatal error", line):
            continue
        line = re.sub(r"^\d{4}[/-]\d\d[/-]\d\d \d\d:\d\d:\d\d (ERROR|CRITICAL)?[ :]*", "", line)
        line = re.sub(r"^Attempt \d+/\d+ failed with \d+ errors and: ", "", line)
        if line and line not in lines and not line.startswith("No common hash found"):  # size-only check: no error
            lines.append(line)
    if not lines:  # an unknown format: fall back to the last lines
        lines = records
    return lines[-count:]


class RcloneError(LorakitError):
    """An rclone call failed. `kind` is one of KINDS; `fatal` means retrying cannot help (stop the whole batch).

    `rclone_exit` is rclone's own exit status (named so it does not shadow `LorakitError.exit_code`, lorakit's).
    """

    def __init__(self, command: Sequence[str], rclone_exit: int, stderr: str, root: str = "remote:",
                 kind: str | None = None, fatal: bool | None = None, what: str = "failed") -> None:
        found_kind, found_fatal = classify(rclone_exit, stderr)
        self.kind = kind or found_kind
        self.fatal = found_fatal if fatal is None else fatal
        self.rclone_exit = rclone_exit
        self.command = _SECRET.sub(r"\1***", " ".join(command))
        self.stderr_lines = meaningful_lines(stderr)
        root = _SECRET.sub(r"\1***", root)  # a connection-string root (":webdav,pass=…:") keeps its secrets
        name = root.split(":", 1)[0] or "remote"
        hint = _HINTS[self.kind].format(root=root, name=name, upper=name.upper())
        details = "".join(f"\n    {line}" for line in self.stderr_lines)
        super().__init__(f"`{self.command}` {what} (rclone exit {rclone_exit}, {self.kind}"
                         f"{', fatal' if self.fatal else ''}){details}", hint)


@dataclass(frozen=True)
class RemoteEntry:
    name: str
    is_dir: bool
    size: int  # bytes; -1 for a folder


@dataclass(frozen=True)
class SyncResult:
    transfers: int  # files copied by this call (0: everything was already there)
    hashed: bool  # False: the check compared sizes only (the two sides share no hash, e.g. webdav)


class Remote:
    """A folder on an rclone remote, `root` = "name:path" (e.g. "gdrive:lorakit"); sub-paths are relative to it."""

    def __init__(self, root: str, rclone: str = "rclone", env: Mapping[str, str] | None = None,
                 flags: Sequence[str] = ()) -> None:
        if ":" not in root:
            raise LorakitError(f"remote {root!r} is not of the form NAME:PATH",
                               "name a remote from `rclone listremotes` followed by a folder, e.g. gdrive:lorakit")
        self.root = root if root.endswith(":") else root.rstrip("/")
        self.rclone = rclone
        self.env = {**os.environ, **(env or {})}
        self.flags = list(flags)  # extra global flags, e.g. ["--retries", "1"]

    def path(self, subpath: str = "") -> str:
        sub = subpath.strip("/")
        if not sub:
            return self.root
        return f"{self.root}{sub}" if self.root.endswith(":") else f"{self.root}/{sub}"

    def _run(self, *args: str, stdin: str | None = None, ok: Sequence[str] = (),
             what: str = "failed") -> subprocess.CompletedProcess[str] | None:
        """Run rclone; None when it failed with a kind listed in `ok`, RcloneError for any other failure."""
        command = [self.rclone, *args, *self.flags]
        try:
            done = subprocess.run(command, input=stdin, capture_output=True, text=True, env=self.env, check=False)
        except FileNotFoundError:
            raise RcloneError(command, 127, f"rclone not found: {self.rclone}", self.root, kind="other", fatal=True,
                              what="could not start: rclone is not installed (https://rclone.org/install/, "
                                   "or `apt install rclone`)") from None
        if done.returncode == 0:
            return done
        kind, _ = classify(done.returncode, done.stderr)
        if kind in ok:
            return None
        raise RcloneError(command, done.returncode, done.stderr, self.root, what=what)

    def entries(self, subdir: str = "") -> list[RemoteEntry]:
        """Files and folders directly in `subdir` (names starting with "." skipped); [] when it does not exist."""
        return sorted((RemoteEntry(item["Name"], bool(item["IsDir"]), int(item.get("Size", -1)))
                       for item in self._list(subdir) if not item["Name"].startswith(".")), key=lambda e: e.name)

    def _list(self, subdir: str) -> list[dict]:
        done = self._run("lsjson", self.path(subdir), ok=("not_found",))
        return [] if done is None else json.loads(done.stdout or "[]")

    def download(self, subdir: str, local: Path) -> SyncResult:
        """Copy `subdir` into `local` (files already there with the same size/modtime are skipped), then verify."""
        Path(local).mkdir(parents=True, exist_ok=True)
        transfers = self._copy(self.path(subdir), str(local))
        return SyncResult(transfers, self.verify(self.path(subdir), str(local)))

    def upload(self, local: Path, subdir: str) -> SyncResult:
        """Copy `local` into `subdir`, then verify. Run again after an interruption, it copies only what is missing."""
        transfers = self._copy(str(local), self.path(subdir))
        return SyncResult(transfers, self.verify(str(local), self.path(subdir)))

    def _copy(self, src: str, dst: str) -> int:
        done = self._run("copy", src, dst, "--use-json-log", "-v")
        assert done is not None
        return _transfers(done.stderr)

    def verify(self, src: str, dst: str) -> bool:
        """`rclone check SRC DST --one-way`: every source file is in DST with the same size (and hash where both
        sides have one). Returns whether hashes were compared; RcloneError names the files that differ."""
        done = self._run("check", src, dst, "--one-way", what="found differences after copying")
        assert done is not None
        return "No common hash found" not in done.stderr

    def delete_files(self, subdir: str) -> None:
        """Delete the files under `subdir`, keeping its folders; a missing `subdir` is nothing to delete."""
        self._run("delete", self.path(subdir), ok=("not_found",))

    def move(self, src_subpath: str, dst_subpath: str) -> bool:
        """Move (rename) a file or folder, server-side where the backend can (see `can_move_folders`).

        False, and nothing moved, when the source is gone (another worker claimed it first) or the destination
        already exists: rclone would merge a folder into an existing one file by file ("Server side directory move
        failed - fallback to file moves: can't copy directory - destination already exists"), so claims must use a
        destination name of their own. Webdav answers a MOVE of a missing folder with 403, not "not found", so a
        failed move looks the source up before raising.
        """
        if self.exists(dst_subpath):
            return False
        try:
            return self._run("moveto", self.path(src_subpath), self.path(dst_subpath), ok=("not_found",)) is not None
        except RcloneError:
            if not self.exists(src_subpath):
                return False
            raise

    def exists(self, subpath: str) -> bool:
        """Whether a file or folder (dot-names included) is at `subpath`."""
        parent, _, name = subpath.strip("/").rpartition("/")
        return any(item["Name"] == name for item in self._list(parent))

    def can_move_folders(self) -> bool:
        """Whether the backend renames folders server-side in one call (feature DirMove); without it `moveto` copies
        file by file, so two workers could both claim the same folder."""
        done = self._run("backend", "features", self.root)
        assert done is not None
        return bool(json.loads(done.stdout).get("Features", {}).get("DirMove"))

    def write_text(self, subpath: str, text: str) -> None:
        """Write a small file (a lease) with `rclone rcat`."""
        self._run("rcat", self.path(subpath), stdin=text)

    def read_text(self, subpath: str) -> str | None:
        """A small file's text (`rclone cat`), None when it does not exist."""
        done = self._run("cat", self.path(subpath), ok=("not_found",))
        return None if done is None else done.stdout

    def cleanup(self) -> None:
        """Empty the remote's trash / old versions (`rclone cleanup`); kind "unsupported" where the backend has none."""
        self._run("cleanup", self.root)


def _transfers(stderr: str) -> int:
    """Files transferred, from the last stats line of `--use-json-log -v` output."""
    count = 0
    for line in stderr.splitlines():
        if line.startswith("{") and '"stats"' in line:
            try:
                count = int(json.loads(line)["stats"].get("transfers", 0))
            except (ValueError, KeyError, TypeError):
                pass
    return count
