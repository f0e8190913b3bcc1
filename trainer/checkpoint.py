"""Checkpoints a run can resume from, bit for bit: adapter, optimizer, schedule, RNG and data position.

Layout: `<jobs_dir>/checkpoints/<name>/step-000200/` with
  adapter.safetensors  LoRA weights (peft keys, prefixed `unet.` / `te0.` / `te1.`)
  optimizer.pt         optimizer + LR scheduler (+ grad scaler) state, read with weights_only=True
  rng.pt               the noise generator and torch's global RNG (dropout draws from it)
  state.json           step, data position, loss history, the settings fingerprint
A checkpoint is written into a hidden `.step-…partial-*` folder and renamed into place when complete:
a kill mid-save leaves the previous checkpoints whole and nothing under a final name. Only the
last `keep` complete checkpoints stay.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .errors import LoraStudioError

log = logging.getLogger("lora_studio.checkpoint")

# Fields whose change makes a checkpoint's weights, optimizer or data order meaningless.
FINGERPRINT_FIELDS = ("rank", "alpha", "lora_dropout", "unet_target_modules", "train_text_encoder",
                      "text_encoder_target_modules", "resolution", "aspect_buckets", "caption_dropout", "shuffle_tags", "keep_tags", "center_crop", "random_flip", "train_batch_size",
                      "gradient_accumulation_steps", "learning_rate", "text_encoder_lr", "lr_scheduler",
                      "lr_warmup_steps", "lr_num_cycles", "lr_power", "max_train_steps", "adam_beta1", "adam_beta2",
                      "adam_weight_decay", "adam_epsilon", "snr_gamma", "noise_offset", "prediction_type", "seed",
                      "with_prior_preservation", "prior_loss_weight", "mixed_precision")


def fingerprint(cfg, base_sha: str, dataset_sha: str) -> dict[str, Any]:
    d = {k: getattr(cfg, k) for k in FINGERPRINT_FIELDS}
    d.update(base_sha256=base_sha, dataset_sha256=dataset_sha)
    return d


def checkpoints_root(cfg) -> Path:
    from .export import sanitize_name

    return Path(cfg.jobs_dir).expanduser() / "checkpoints" / sanitize_name(cfg.name)


@dataclass
class Checkpoint:
    path: Path
    step: int
    state: dict[str, Any]


def complete_checkpoints(root: Path) -> list[Checkpoint]:
    out = []
    if not root.is_dir():
        return out
    for d in root.iterdir():
        if d.is_dir() and d.name.startswith("step-") and (d / "state.json").is_file():
            try:
                state = json.loads((d / "state.json").read_text())
            except (OSError, ValueError):
                continue
            out.append(Checkpoint(d, int(state["step"]), state))
    return sorted(out, key=lambda c: c.step)


def save(root: Path, step: int, tensors: dict[str, torch.Tensor], optim_state: dict, rng_state: dict,
         state: dict[str, Any], keep: int) -> Path:
    from .export import write_safetensors_atomic

    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step-{step:06d}"
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.partial-", dir=root))
    try:
        write_safetensors_atomic(tmp / "adapter.safetensors", tensors, {"step": str(step)}, overwrite=True)
        _save_torch(tmp / "optimizer.pt", optim_state)
        _save_torch(tmp / "rng.pt", rng_state)
        (tmp / "state.json").write_text(json.dumps(dict(state, step=step), indent=1, default=str))
        _fsync_dir(tmp)
        if final.exists():  # the same step saved twice (cancel right after a periodic save)
            shutil.rmtree(final)
        os.rename(tmp, final)
        _fsync_dir(root)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    for old in complete_checkpoints(root)[:-keep]:
        shutil.rmtree(old.path, ignore_errors=True)
    log.info("checkpoint %s", final)
    return final


def _save_torch(path: Path, obj: Any) -> None:
    with open(path, "wb") as f:
        torch.save(obj, f)
        f.flush()
        os.fsync(f.fileno())


def _fsync_dir(d: Path) -> None:
    try:
        fd = os.open(d, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def load(ck: Checkpoint) -> tuple[dict[str, torch.Tensor], dict, dict]:
    from safetensors.torch import load_file

    try:
        tensors = load_file(str(ck.path / "adapter.safetensors"))
        optim = torch.load(ck.path / "optimizer.pt", map_location="cpu", weights_only=True)
        rng = torch.load(ck.path / "rng.pt", map_location="cpu", weights_only=True)
    except Exception as e:
        raise LoraStudioError(f"Checkpoint {ck.path} cannot be read ({e.__class__.__name__}: {e}). Fix: delete it "
                              "and resume from an earlier one, or start without resume_from.") from None
    return tensors, optim, rng


def resolve_resume(cfg, fp: dict[str, Any]) -> Checkpoint | None:
    """The checkpoint to continue from, or None for a fresh start.

    "latest": the newest checkpoint of this LoRA name; a path: that folder; "auto": the newest one
    only if its run did not finish and its settings match (pressing Queue again after a Cancel).
    """
    mode = (cfg.resume_from or "").strip()
    if not mode:
        return None
    if mode in ("latest", "auto"):
        found = complete_checkpoints(checkpoints_root(cfg))
        if not found:
            if mode == "latest":
                raise LoraStudioError(f"resume_from='latest' but no checkpoint of '{cfg.name}' exists under "
                                      f"{checkpoints_root(cfg)}. Fix: check the LoRA name, or start fresh.")
            return None
        ck = found[-1]
        if mode == "auto" and (ck.state.get("finished") or ck.state.get("fingerprint") != fp):
            return None
    else:
        p = Path(mode).expanduser()
        found = [c for c in complete_checkpoints(p.parent) if c.path == p]
        if not found:
            raise LoraStudioError(f"resume_from='{mode}' is not a complete checkpoint folder. Fix: give a "
                                  "step-NNNNNN folder from the job's checkpoints, or 'latest'.")
        ck = found[0]
    diff = {k: (ck.state.get("fingerprint", {}).get(k), v) for k, v in fp.items()
            if ck.state.get("fingerprint", {}).get(k) != v}
    if diff:
        k, (old, new) = next(iter(diff.items()))
        raise LoraStudioError(f"Checkpoint {ck.path.name} was made with other settings ({len(diff)} differ; e.g. "
                              f"{k} was {old!r}, now {new!r}). Fix: restore those settings to resume, or clear "
                              "resume_from to start a new run.")
    return ck


def mark_finished(cfg, job_id: str) -> None:
    """Tell "auto" resume that this name's newest checkpoint belongs to a run that completed."""
    found = complete_checkpoints(checkpoints_root(cfg))
    if found:
        state_file = found[-1].path / "state.json"
        state = dict(found[-1].state, finished=job_id)
        tmp = state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(state, indent=1, default=str))
        os.replace(tmp, state_file)


def short_hash(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:12]
