"""Job records (the guide's `lora/jobs/<id>.json`) as the web interface's job table and job pages.

A record is written by `trainer.job.run_job` once a run's inputs are known good and closed when it ends
(finished / cancelled / failed). What only the server knows is passed in by the caller:
`live` (the running job's step, ETA and losses, keyed by prompt id) and `queued` (prompts waiting in
ComfyUI's queue). Records carry the ComfyUI user that queued them; a viewer sees their own jobs, an
operator (LORA_STUDIO_OPERATORS) sees everyone's.
"""
from __future__ import annotations

import json
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from ..presets import PRESETS, apply_preset
from ..runstate import record_status
from .errors import StudioError

log = logging.getLogger("lora_studio.studio")

OPERATORS_ENV = "LORA_STUDIO_OPERATORS"  # comma-separated ComfyUI user ids that see every job; "*" = everybody
DEFAULT_USER = "default"  # ComfyUI's user without --multi-user
SPARK_POINTS = 48
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,159}$")
FINISHED, CANCELLED, FAILED, RUNNING, QUEUED, STOPPED = "finished", "cancelled", "failed", "running", "queued", "stopped"
INTERRUPTED = "interrupted"  # a headless run whose process died (trainer.runstate)
# paths and per-machine fields: never shown as "differs from the preset"
_NOT_SETTINGS = {"name", "preset", "base_model", "dataset", "output_dir", "jobs_dir", "cache_dir", "tokenizer_dir",
                 "model_config_dir", "trigger_token", "resume_from"}


def operators() -> set[str]:
    return {u.strip() for u in os.environ.get(OPERATORS_ENV, "").split(",") if u.strip()}


@dataclass(frozen=True)
class Viewer:
    """Who asks: a ComfyUI user id, and whether the operator setting lets them see every job."""

    user: str = DEFAULT_USER
    operator: bool = False

    @classmethod
    def of(cls, user: str | None, name: str | None = None) -> "Viewer":
        """`user`: ComfyUI's user id; `name`: the name it was created with. Operators may be listed by either."""
        user = user or DEFAULT_USER
        ops = operators()
        return cls(user, "*" in ops or user in ops or (name is not None and name in ops))

    def may_see(self, owner: str) -> bool:
        return self.operator or owner == self.user

    def may_act(self, owner: str) -> bool:
        return self.may_see(owner)  # operators may cancel any job; users only their own


def owner_of(record: dict) -> str:
    return str(record.get("user") or DEFAULT_USER)


def sparkline(values: Iterable[float], points: int = SPARK_POINTS) -> list[float]:
    """At most `points` values: the mean of equal slices, so a 4000-step curve keeps its shape."""
    vals = [float(v) for v in values if isinstance(v, (int, float)) and v == v]
    if len(vals) <= points:
        return vals
    out = []
    for i in range(points):
        a, b = i * len(vals) // points, (i + 1) * len(vals) // points
        out.append(sum(vals[a:b]) / max(1, b - a))
    return out


def settings_differing_from_preset(config: dict) -> dict[str, dict[str, Any]]:
    """{field: {"value": this job's, "preset": the preset's}} for every setting the user changed."""
    key = config.get("preset")
    if key not in PRESETS:
        return {}
    base = apply_preset(key).to_dict()
    return {k: {"value": v, "preset": base.get(k)} for k, v in sorted(config.items())
            if k not in _NOT_SETTINGS and k in base and base[k] != v}


def _name(path: Any) -> str:
    return Path(str(path)).name if path else ""


class JobStore:
    """The job records in one folder (ComfyUI: `<output>/lora_studio/jobs`)."""

    def __init__(self, jobs_dir: str | Path):
        self.root = Path(jobs_dir)

    # ------------------------------------------------------------------ reading
    def _records(self) -> Iterable[tuple[Path, dict]]:
        if not self.root.is_dir():
            return
        for path in self.root.glob("*.json"):
            if path.name.startswith("."):
                continue
            rec = self._read(path)
            if rec is not None:
                yield path, rec

    @staticmethod
    def _read(path: Path) -> dict | None:
        try:
            rec = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:  # a half-copied or hand-edited file must not hide the others
            log.warning("job record %s unreadable: %s", path, e)
            return None
        return rec if isinstance(rec, dict) and isinstance(rec.get("config"), dict) else None

    def path_of(self, job_id: str) -> Path:
        if not isinstance(job_id, str) or not _ID.match(job_id):
            raise StudioError(400, f"'{job_id}' is not a job id. Fix: use an id from GET /lora_studio/jobs "
                                   "(letters, digits, '-', '_' and '.').")
        path = self.root / f"{job_id}.json"
        if not path.is_file():
            raise StudioError(404, f"There is no job '{job_id}'. Fix: pick one from the job table "
                                   "(GET /lora_studio/jobs).")
        return path

    def record(self, job_id: str, viewer: Viewer) -> dict:
        rec = self._read(self.path_of(job_id))
        if rec is None:
            raise StudioError(500, f"The record of job '{job_id}' cannot be read (damaged JSON). Fix: ask the "
                                   "server's operator to look at it.")
        if not viewer.may_see(owner_of(rec)):
            raise StudioError(403, f"Job '{job_id}' belongs to another user. Fix: open one of your own jobs.")
        return rec

    # ------------------------------------------------------------------ the table
    def summaries(self, viewer: Viewer, live: dict[str, dict] | None = None,
                  queued: list[dict] | None = None, running_prompts: set[str] | None = None) -> list[dict]:
        """Every visible job, newest first. `running_prompts`: prompt ids ComfyUI is executing now; a record
        still marked running whose prompt is not among them (the server restarted) shows as 'stopped'."""
        live = live or {}
        out, seen_prompts = [], set()
        for _, rec in self._records():
            if not viewer.may_see(owner_of(rec)):
                continue
            s = summarize(rec, live.get(str(rec.get("prompt_id"))))
            if s["status"] == RUNNING and running_prompts is not None and rec.get("prompt_id") not in running_prompts:
                s["status"] = STOPPED
                s["message"] = s["message"] or "The server stopped during this run. Resume continues from its last " \
                                               "checkpoint."
                s["resumable"] = True
            seen_prompts.add(rec.get("prompt_id"))
            out.append(s)
        for q in queued or []:  # prompts waiting in ComfyUI's queue, or started but not yet past model loading
            if q.get("prompt_id") in seen_prompts or not viewer.may_see(str(q.get("user") or DEFAULT_USER)):
                continue
            out.append(queued_summary(q, live.get(str(q.get("prompt_id")))))
        out.sort(key=lambda s: s.get("created") or "", reverse=True)
        return out


def summarize(rec: dict, live: dict | None = None) -> dict:
    cfg = rec.get("config") or {}
    metrics = rec.get("metrics") or {}
    losses = metrics.get("losses") or (live or {}).get("losses") or []
    status = record_status(rec) if rec.get("status") else RUNNING  # "interrupted" when its process is gone
    folder = Path(str(rec.get("folder") or ""))
    previews = sorted(p.name for p in (folder / "previews").glob("preview-*.png")) if rec.get("folder") else []
    total = int(cfg.get("max_train_steps") or 0)
    s = {
        "id": rec.get("id"), "name": cfg.get("name"), "status": status, "message": rec.get("message") or "",
        "preset": cfg.get("preset"), "base_model": _name(cfg.get("base_model")), "dataset": _name(cfg.get("dataset")),
        "trigger_token": cfg.get("trigger_token") or "", "steps": total,
        "step": metrics.get("steps") if status == FINISHED else None, "eta_s": None,
        "final_loss": float(losses[-1]) if losses else None, "sparkline": sparkline(losses),
        "preview": previews[-1] if previews else None, "previews": len(previews),
        "lora": _name((rec.get("outputs") or {}).get("lora")), "created": rec.get("created"),
        "finished": rec.get("finished"), "user": owner_of(rec), "prompt_id": rec.get("prompt_id"),
        "command": rec.get("command") or "", "resumable": status in (CANCELLED, FAILED, INTERRUPTED),
        "cancellable": status == RUNNING,
    }
    if status == RUNNING and live:
        s.update(step=live.get("step"), eta_s=live.get("eta_s"), steps=live.get("total") or total)
    return s


def queued_summary(q: dict, live: dict | None = None) -> dict:
    """A prompt in ComfyUI's queue that will train (or is loading its model): no record yet."""
    started = bool(q.get("running"))
    return {
        "id": q.get("prompt_id"), "name": q.get("name"), "status": RUNNING if started else QUEUED,
        "message": "loading the model and the dataset" if started else "", "preset": q.get("preset"),
        "base_model": _name(q.get("base_model")), "dataset": _name(q.get("dataset")), "trigger_token": "",
        "steps": q.get("steps"), "step": (live or {}).get("step"), "eta_s": (live or {}).get("eta_s"),
        "final_loss": None, "sparkline": sparkline((live or {}).get("losses") or []), "preview": None, "previews": 0,
        "lora": "", "created": q.get("created"), "finished": None, "user": str(q.get("user") or DEFAULT_USER),
        "prompt_id": q.get("prompt_id"), "command": "", "resumable": False, "cancellable": True, "queued": True,
    }


def job_page(rec: dict, live: dict | None = None) -> dict:
    """A job's page: the record, its summary, the preview files, the settings that differ from the preset."""
    folder = Path(str(rec.get("folder") or ""))
    previews = sorted(p.name for p in (folder / "previews").glob("*.png")) if rec.get("folder") else []
    return {"record": rec, "summary": summarize(rec, live), "previews": previews,
            "bias_grid": bool(rec.get("folder")) and (folder / "bias_check_grid.png").is_file(),
            "differs": settings_differing_from_preset(rec.get("config") or {}),
            "live": live or None}


def job_file(rec: dict, kind: str, name: str = "") -> Path:
    """A file a job may serve: one of its previews, its bias grid, its LoRA; nothing else."""
    folder = Path(str(rec.get("folder") or ""))
    if kind == "preview":
        if not re.match(r"^[\w.\-]+\.png$", name or ""):
            raise StudioError(400, f"'{name}' is not a preview file name. Fix: use a name the job page lists.")
        path = folder / "previews" / name
    elif kind == "bias_grid":
        path = folder / "bias_check_grid.png"
    elif kind == "lora":
        path = Path(str((rec.get("outputs") or {}).get("lora") or ""))
        if not str(path) or path.suffix != ".safetensors":
            raise StudioError(404, "This job has no saved LoRA (it did not finish, or Save LoRA was not in the "
                                   "graph). Fix: run it with Save LoRA to models/loras.")
    else:
        raise StudioError(400, f"Unknown file kind '{kind}'. Fix: use preview, bias_grid or lora.")
    if not path.is_file():
        raise StudioError(404, f"The job's file '{path.name}' is not there (deleted or not yet written).")
    return path
