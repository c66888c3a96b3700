"""A job's events.jsonl read as the child appends to it: only complete lines, each once, and a replaced file read
from its start (lorakit.jobs.runner.events, which the web UI polls every second)."""

from __future__ import annotations

import json
import os
from pathlib import Path

from lorakit.jobs.runner import events
from lorakit.jobs.store import JobStore


def test_events_are_read_as_they_are_appended(tmp_path: Path) -> None:
    store = JobStore(tmp_path / "home")
    job = store.add("j", {"files": []}, 'version = 3\n')
    path = store.home / job.folder / "events.jsonl"
    assert events(store, job) == []  # nothing written yet
    path.parent.mkdir(parents=True, exist_ok=True)
    first = json.dumps({"event": "step", "step": 1, "loss": 0.5})
    second = json.dumps({"event": "step", "step": 2, "loss": 0.25})
    with open(path, "w", encoding="utf-8") as f:
        f.write(first + "\n" + second[:10])  # the child is in the middle of its second line
        f.flush()
        assert events(store, job) == [{"event": "step", "step": 1, "loss": 0.5}]
        f.write(second[10:] + "\n")
        f.flush()
        assert [e["step"] for e in events(store, job)] == [1, 2]
        assert [e["step"] for e in events(store, job)] == [1, 2]  # asked again: each line once
        f.write("not json\n" + json.dumps({"event": "end", "steps": 2}) + "\n")
    assert [e["event"] for e in events(store, job)] == ["step", "step", "end"]  # a bad line is skipped
    replaced = path.with_name("new.jsonl")
    replaced.write_text(json.dumps({"event": "start"}) + "\n", encoding="utf-8")
    os.replace(replaced, path)  # a new file under the same name (another inode)
    assert events(store, job) == [{"event": "start"}]
    store.finish(job.id, "done", 0)
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps({"event": "end", "steps": 0}) + "\n")
    assert [e["event"] for e in events(store, store.get(job.id))] == ["start", "end"]  # ended: read whole, not kept
