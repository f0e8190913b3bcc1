"""Commands we print for people to copy: every one is built with shlex, so it runs as pasted.

A path holding spaces, quotes, `$(…)` or backticks stays one literal argument; nothing in a job
name, a dataset path or a record path is ever interpreted by the shell.
"""
from __future__ import annotations

import os
import shlex
import sys
from pathlib import Path


def shell_join(argv: list[str], cwd: str | Path | None = None) -> str:
    """`argv` as one shell line; with `cwd`, prefixed by `cd <cwd> &&` (relative paths keep their meaning)."""
    line = shlex.join([str(a) for a in argv])
    return f"cd {shlex.quote(str(cwd))} && {line}" if cwd is not None else line


def headless_command(record_path: Path | str) -> str:
    """The guide's copyable command: the same job, from a terminal, on one or several GPUs."""
    return shell_join(["accelerate", "launch", "-m", "trainer", "train", "--job", str(record_path)])


def resume_command(record_path: Path | str, checkpoint: Path | str) -> str:
    """The exact line that continues a stopped run: this Python, this folder, this job, this checkpoint."""
    return shell_join([sys.executable, "-m", "trainer", "train", "--job", str(Path(record_path).absolute()),
                       "--set", f"resume_from={Path(checkpoint).absolute()}"], cwd=os.getcwd())
