"""Errors the trainer raises on purpose.

Each one carries a message written for the person who has to act on it: what is wrong,
where, and what to do. Callers (the nodes, the CLI) show the message as it is.
"""
from __future__ import annotations

from dataclasses import dataclass


class LoraStudioError(Exception):
    """Base class: an expected, explained failure (never a bug)."""


@dataclass(frozen=True)
class Problem:
    field: str
    value: object
    allowed: str
    fix: str

    def __str__(self) -> str:
        return f"{self.field} = {self.value!r} is invalid: allowed {self.allowed}. Fix: {self.fix}"


class ConfigError(LoraStudioError, ValueError):
    """One or more config fields are out of range. `problems` lists every one of them."""

    def __init__(self, problems: list[Problem]):
        self.problems = list(problems)
        lines = "\n".join(f"- {p}" for p in self.problems)
        super().__init__(f"The training configuration has {len(self.problems)} problem(s):\n{lines}")


class DatasetError(LoraStudioError, ValueError):
    """The dataset cannot be used for training (missing, empty, unsafe, unreadable)."""


class ModelLoadError(LoraStudioError, ValueError):
    """The base model cannot be loaded (missing, unsupported type, missing configs)."""


class TrainingCancelled(LoraStudioError):
    """The caller asked the run to stop. `step` is the last finished optimizer step."""

    def __init__(self, step: int, message: str = ""):
        self.step = step
        super().__init__(message or f"Training was cancelled after step {step}; no LoRA was written.")


class TrainingFailed(LoraStudioError, RuntimeError):
    """The run stopped on its own (non-finite loss, out of memory); the message says why and what to change."""


class ExportError(LoraStudioError, OSError):
    """Writing an output file failed; any previous file under that name is intact."""
