"""Which run owns what: half-written files left by a killed process, records of runs that are gone.

Every temporary name we create carries the writing process's id (`.<name>.<pid>-<random>.partial`),
so the next start can tell a leftover of a dead process (removed) from the half-built file of a run
that is still going in the same folder (never touched). Job records carry their process too: a
record that says "running" while its process is gone reads, and is rewritten as, "interrupted".

Process ids are only meaningful on one machine: a record or partial from another host is left alone.
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shutil
import socket
import time
from pathlib import Path
from typing import Any

log = logging.getLogger("lora_studio.runstate")

PARTIAL = ".partial"
# Partials without a process id (written before ids were added) count as stale after this long.
LEGACY_STALE_S = 3600
_PID = re.compile(r"\.(\d+)-[^/]*\.partial$")


def partial_prefix(name: str) -> str:
    """The prefix for tempfile.mkstemp/mkdtemp(prefix=…, suffix=PARTIAL) of a file that will become `name`."""
    return f".{name}.{os.getpid()}-"


def pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True  # exists, owned by someone else (or we cannot tell): keep its files
    return True


def _owner_gone(p: Path) -> bool:
    m = _PID.search(p.name)
    if m:
        return not pid_alive(int(m.group(1)))
    try:
        return time.time() - p.lstat().st_mtime > LEGACY_STALE_S
    except OSError:
        return False


def is_partial(p: Path) -> bool:
    return p.name.endswith(PARTIAL) or ".partial-" in p.name  # the second: checkpoints before pids were added


def clean_partials(folder: str | Path) -> list[Path]:
    """Remove the leftovers of dead processes directly in `folder` (not below it). Returns what went."""
    removed = []
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        return removed
    with contextlib.suppress(OSError):
        for p in folder.iterdir():
            if is_partial(p) and _owner_gone(p):
                try:
                    if p.is_dir() and not p.is_symlink():
                        shutil.rmtree(p)
                    else:
                        p.unlink()
                except OSError as e:
                    log.warning("could not remove the leftover %s: %s", p, e)
                    continue
                removed.append(p)
    if removed:
        log.info("removed %d half-written leftover(s) of stopped runs in %s", len(removed), folder)
    return removed


def this_process() -> dict[str, Any]:
    return {"pid": os.getpid(), "host": socket.gethostname()}


def process_gone(proc: dict[str, Any] | None) -> bool:
    """True only when we can tell: same host, and no process with that id."""
    if not isinstance(proc, dict) or proc.get("host") != socket.gethostname():
        return False
    try:
        return not pid_alive(int(proc.get("pid")))
    except (TypeError, ValueError):
        return False


def record_status(record: dict[str, Any]) -> str:
    """The status a person should read: "running" only while the run's process is alive."""
    status = record.get("status", "unknown")
    if status == "running" and process_gone(record.get("process")):
        return "interrupted"
    return status


def mark_interrupted_records(jobs_dir: str | Path) -> list[Path]:
    """Rewrite records of runs whose process died as "interrupted" (atomically). Returns the records changed."""
    from .atomic import write_json_atomic

    changed = []
    jobs_dir = Path(jobs_dir).expanduser()
    if not jobs_dir.is_dir():
        return changed
    for p in sorted(jobs_dir.glob("*.json")):
        try:
            if p.stat().st_size > 4 * 2**20:
                continue
            record = json.loads(p.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if not isinstance(record, dict) or record_status(record) != "interrupted" or record.get("status") != "running":
            continue
        record.update(status="interrupted", message="the process running this job ended without closing it "
                      "(killed, or the machine stopped); resume from its last checkpoint if it has one")
        with contextlib.suppress(Exception):
            write_json_atomic(p, record, overwrite=True)
            changed.append(p)
    return changed
