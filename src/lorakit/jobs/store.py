"""The job queue's store: one SQLite file under the lorakit home, safe for several processes (a UI, `lorakit queue`
commands, runners): WAL journal, a busy timeout, and `BEGIN IMMEDIATE` wherever a job changes hands.

A job keeps the config's source (preset, files, --add layers, --set values: what the user asked for, shown and
reproducible) and the config it resolved to when it was added (what will run, whatever the files say later).
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from ..errors import ConfigError, LorakitError

STATES = ("queued", "running", "done", "failed", "stopped", "cancelled")
ACTIVE = ("queued", "running")

SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL,            -- output.output_name
    source TEXT NOT NULL,          -- JSON: preset, files, adds, sets
    config TEXT NOT NULL,          -- the resolved config (TOML) the job runs
    state TEXT NOT NULL,
    position REAL NOT NULL,        -- queue order among queued jobs
    created REAL NOT NULL,
    started REAL,
    finished REAL,
    run_dir TEXT,
    exit_code INTEGER,
    message TEXT,                  -- why it failed or stopped
    runner_pid INTEGER,            -- the `lorakit queue run` process that runs it
    child_pid INTEGER,             -- its `lorakit train` process (SIGINT stops it)
    gpu TEXT,                      -- CUDA_VISIBLE_DEVICES of the run, "" on the CPU
    resume INTEGER NOT NULL DEFAULT 0  -- 1: continue its run folder from the last checkpoint (`--resume`)
);
"""


def lorakit_home(home: str | Path | None = None) -> Path:
    """--home, else $LORAKIT_HOME, else ~/.lorakit (created)."""
    path = Path(home or os.environ.get("LORAKIT_HOME") or Path.home() / ".lorakit").expanduser()
    path.mkdir(parents=True, exist_ok=True)
    return path


@dataclass
class Job:
    id: int
    name: str
    source: dict
    config: str
    state: str
    position: float
    created: float
    started: float | None
    finished: float | None
    run_dir: str | None
    exit_code: int | None
    message: str | None
    runner_pid: int | None
    child_pid: int | None
    gpu: str | None
    resume: int = 0

    @property
    def folder(self) -> str:
        return f"jobs/{self.id:05d}"


class JobStore:
    def __init__(self, home: str | Path | None = None) -> None:
        self.home = lorakit_home(home)
        self.path = self.home / "jobs.sqlite"
        with self._connect() as db:
            db.executescript(SCHEMA)
            columns = {row["name"] for row in db.execute("PRAGMA table_info(jobs)")}
            if "resume" not in columns:  # a queue made before jobs could resume
                db.execute("ALTER TABLE jobs ADD COLUMN resume INTEGER NOT NULL DEFAULT 0")

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        db.row_factory = sqlite3.Row
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA busy_timeout=30000")
        try:
            yield db
        finally:
            db.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """A write transaction that holds the database's write lock from its first statement (BEGIN IMMEDIATE):
        two processes checking and changing the queue never interleave."""
        with self._connect() as db:
            db.execute("BEGIN IMMEDIATE")
            try:
                yield db
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise

    @staticmethod
    def _job(row: sqlite3.Row) -> Job:
        values = dict(row)
        values["source"] = json.loads(values["source"])
        return Job(**values)

    # ---- reading ----

    def jobs(self, states: tuple[str, ...] = STATES) -> list[Job]:
        marks = ",".join("?" * len(states))
        with self._connect() as db:
            rows = db.execute(f"SELECT * FROM jobs WHERE state IN ({marks}) ORDER BY "
                              "CASE state WHEN 'running' THEN 0 WHEN 'queued' THEN 1 ELSE 2 END, position, id",
                              states).fetchall()
        return [self._job(r) for r in rows]

    def get(self, job_id: int) -> Job:
        with self._connect() as db:
            row = db.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
        if row is None:
            raise LorakitError(f"no job {job_id} in the queue ({self.path})", "`lorakit queue list` shows them")
        return self._job(row)

    # ---- changing ----

    def add(self, name: str, source: dict, config: str) -> Job:
        """Queue a job at the end. A job of the same output name already queued or running is refused (TrainTrain's
        rule: two runs would write files of the same name), naming both."""
        with self.transaction() as db:
            clash = db.execute("SELECT id, state FROM jobs WHERE name = ? AND state IN ('queued', 'running')",
                               (name,)).fetchone()
            if clash is not None:
                raise ConfigError([f"output name {name!r} is already used by job {clash['id']} ({clash['state']})"],
                                  "change output.output_name (e.g. --set output.output_name=…), or cancel that job")
            last = db.execute("SELECT MAX(position) FROM jobs").fetchone()[0] or 0
            cursor = db.execute("INSERT INTO jobs (name, source, config, state, position, created) VALUES "
                                "(?, ?, ?, 'queued', ?, ?)", (name, json.dumps(source), config, last + 1, time.time()))
            job_id = cursor.lastrowid
        return self.get(job_id)

    def claim_next(self, runner_pid: int, gpu: str) -> Job | None:
        """The first queued job, now running for this runner; None when none is queued."""
        with self.transaction() as db:
            row = db.execute("SELECT id FROM jobs WHERE state = 'queued' ORDER BY position, id LIMIT 1").fetchone()
            if row is None:
                return None
            db.execute("UPDATE jobs SET state = 'running', started = ?, runner_pid = ?, gpu = ? WHERE id = ?",
                       (time.time(), runner_pid, gpu, row["id"]))
        return self.get(row["id"])

    def update(self, job_id: int, **values: object) -> None:
        names = ", ".join(f"{k} = ?" for k in values)
        with self.transaction() as db:
            db.execute(f"UPDATE jobs SET {names} WHERE id = ?", (*values.values(), job_id))

    def finish(self, job_id: int, state: str, exit_code: int | None, message: str = "") -> None:
        self.update(job_id, state=state, exit_code=exit_code, message=message or None, finished=time.time(),
                    child_pid=None)

    def cancel(self, job_id: int) -> Job:
        """Take a queued job out of the queue (a running one is stopped with `stop`)."""
        with self.transaction() as db:
            row = db.execute("SELECT state FROM jobs WHERE id = ?", (job_id,)).fetchone()
            if row is None:
                raise LorakitError(f"no job {job_id} in the queue")
            if row["state"] != "queued":
                raise LorakitError(f"job {job_id} is {row['state']}, not queued",
                                   "stop a running job with `lorakit queue stop`" if row["state"] == "running"
                                   else None)
            db.execute("UPDATE jobs SET state = 'cancelled', finished = ? WHERE id = ?", (time.time(), job_id))
        return self.get(job_id)

    def move(self, job_id: int, to: int) -> list[Job]:
        """Put a queued job at place `to` (1 = next) among the queued jobs."""
        with self.transaction() as db:
            queued = [r["id"] for r in db.execute("SELECT id FROM jobs WHERE state = 'queued' ORDER BY position, id")]
            if job_id not in queued:
                raise LorakitError(f"job {job_id} is not queued", "`lorakit queue list` shows the queued jobs")
            queued.remove(job_id)
            queued.insert(max(0, min(to - 1, len(queued))), job_id)
            for place, jid in enumerate(queued, 1):
                db.execute("UPDATE jobs SET position = ? WHERE id = ?", (place, jid))
        return self.jobs(("queued",))

    def orphans(self, alive, resumable=lambda job: False) -> list[Job]:
        """Running jobs whose runner process is gone (killed). One whose run has a complete checkpoint
        (`resumable(job)`) goes back to the front of the queue to continue from it; any other is marked failed.
        Either way the queue goes on."""
        found = []
        for job in self.jobs(("running",)):
            if job.runner_pid is None or alive(job.runner_pid):
                continue
            if resumable(job):
                with self.transaction() as db:
                    first = db.execute("SELECT MIN(position) FROM jobs").fetchone()[0] or 0
                    db.execute("UPDATE jobs SET state = 'queued', resume = 1, position = ?, child_pid = NULL, "
                               "message = ? WHERE id = ?", (first - 1, f"its runner (pid {job.runner_pid}) was "
                               "killed mid-run; it continues from its last checkpoint", job.id))
            else:
                self.finish(job.id, "failed", None, f"its runner (pid {job.runner_pid}) was killed mid-run")
            found.append(self.get(job.id))
        return found
