"""Checkpoints a run can resume from, bit for bit: adapter, optimizer, schedule, RNG and data position.

Layout: `<jobs_dir>/checkpoints/<name>/<job id>/step-000200/` with
  adapter.safetensors  LoRA weights (peft keys, prefixed `unet.` / `te0.` / `te1.`)
  optimizer.pt         optimizer + LR scheduler (+ grad scaler) state, read with weights_only=True
  rng.pt               the noise generator and torch's global RNG (dropout draws from it)
  state.json           step, data position, loss history, the settings fingerprint
A checkpoint is written into a hidden `.step-….<pid>-….partial` folder and renamed into place when
complete: a kill mid-save leaves the previous checkpoints whole and nothing under a final name (the
leftover is removed at the next start). Each run writes and prunes only its own job's folder (the last
`keep` complete checkpoints stay), so runs that share a jobs folder never touch each other's; resume
looks across all runs of the name. (Checkpoints directly under `<name>/` are from before job folders.)

Why ours and not accelerate's `save_state` / `load_state` (+ `register_for_checkpointing`): bit-exact
resume would be reachable with hooks (a save pre-hook that keeps only the adapter, our two generators
wrapped as registered objects), but three things would remain: it writes straight into the final folder (a
kill mid-save leaves a half checkpoint under a good name), `load_state` sets Python's and NumPy's global RNGs
(in a ComfyUI process they belong to the server and other nodes; `run_job` forks only torch's), and
registered objects are read back with `weights_only=False` (any pickle in a checkpoint folder would run).
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .atomic import atomic_folder, write_json_atomic
from .errors import LoraStudioError

log = logging.getLogger("lora_studio.checkpoint")

# Fields whose change makes a checkpoint's weights, optimizer or data order meaningless.
FINGERPRINT_FIELDS = ("rank", "alpha", "lora_dropout", "unet_target_modules", "train_text_encoder",
                      "text_encoder_target_modules", "resolution", "aspect_buckets", "caption_dropout", "shuffle_tags", "keep_tags", "center_crop", "random_flip", "train_batch_size",
                      "gradient_accumulation_steps", "learning_rate", "text_encoder_lr", "lr_scheduler",
                      "lr_warmup_steps", "lr_num_cycles", "lr_power", "max_train_steps", "adam_beta1", "adam_beta2",
                      "adam_weight_decay", "adam_epsilon", "snr_gamma", "noise_offset", "prediction_type", "seed",
                      "with_prior_preservation", "prior_loss_weight", "mixed_precision", "max_grad_norm")


def fingerprint(cfg, base_sha: str, dataset_sha: str) -> dict[str, Any]:
    d = {k: getattr(cfg, k) for k in FINGERPRINT_FIELDS}
    d.update(base_sha256=base_sha, dataset_sha256=dataset_sha)
    return d


def checkpoints_root(cfg) -> Path:
    from .export import sanitize_name

    return Path(cfg.jobs_dir).expanduser() / "checkpoints" / sanitize_name(cfg.name)


def job_root(cfg, job_id: str) -> Path:
    """Where one run writes its checkpoints (and only there it prunes)."""
    return checkpoints_root(cfg) / job_id


def find(cfg) -> list[Checkpoint]:
    """Every complete checkpoint of this LoRA name, of every run, oldest first (by when it was saved)."""
    root = checkpoints_root(cfg)
    found = complete_checkpoints(root)  # from before job folders
    if root.is_dir():
        for d in root.iterdir():
            if d.is_dir() and not d.name.startswith((".", "step-")):
                found += complete_checkpoints(d)
    return sorted(found, key=lambda c: (c.state.get("saved_at", 0), c.step))


def clean_leftovers(cfg) -> None:
    """Half-written checkpoint folders of dead processes, in every run folder of this name."""
    from .runstate import clean_partials

    root = checkpoints_root(cfg)
    clean_partials(root)
    if root.is_dir():
        for d in root.iterdir():
            if d.is_dir() and not d.name.startswith("."):
                clean_partials(d)


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
    from .errors import ExportError
    from .export import write_safetensors_atomic
    from .runstate import this_process

    final = root / f"step-{step:06d}"
    try:
        # overwrite: the same step saved twice (cancel right after a periodic save)
        with atomic_folder(final, overwrite=True) as tmp:
            write_safetensors_atomic(tmp / "adapter.safetensors", tensors, {"step": str(step)}, overwrite=False)
            _save_torch(tmp / "optimizer.pt", optim_state)
            _save_torch(tmp / "rng.pt", rng_state)
            write_json_atomic(tmp / "state.json", dict(state, step=step, saved_at=time.time(), process=this_process()),
                              overwrite=False)
    except OSError as e:  # ExportError included: disk full, permissions
        raise ExportError(f"Could not write the checkpoint of step {step} in {root}: {e.strerror or e}. The "
                          "earlier checkpoints are intact. Fix: free disk space (or set jobs_dir to a disk with "
                          "room).") from None
    for old in complete_checkpoints(root)[:-keep]:
        shutil.rmtree(old.path, ignore_errors=True)
    log.info("checkpoint %s", final)
    return final


def _save_torch(path: Path, obj: Any) -> None:
    with open(path, "wb") as f:
        torch.save(obj, f)
        f.flush()
        os.fsync(f.fileno())


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


def _busy(ck: Checkpoint) -> bool:
    """Written by another run that is still going (it may prune it at any moment): not ours to resume."""
    from .runstate import process_gone, this_process

    proc = ck.state.get("process")
    return isinstance(proc, dict) and proc != this_process() and not process_gone(proc) \
        and proc.get("host") == this_process()["host"]


def resolve_resume(cfg, fp: dict[str, Any]) -> Checkpoint | None:
    """The checkpoint to continue from, or None for a fresh start.

    "latest": the newest checkpoint of this LoRA name; a path: that folder; "auto": the newest one
    only if its run did not finish and its settings match (pressing Queue again after a Cancel).
    Checkpoints of runs still going in the same jobs folder are never picked.
    """
    mode = (cfg.resume_from or "").strip()
    if not mode:
        return None
    if mode in ("latest", "auto"):
        found = [c for c in find(cfg) if not _busy(c)]
        if not found:
            if mode == "latest":
                raise LoraStudioError(f"resume_from='latest' but no checkpoint of '{cfg.name}' exists under "
                                      f"{checkpoints_root(cfg)}. Fix: check the LoRA name, or start fresh.")
            return None
        ck = found[-1]
        if mode == "auto" and (ck.state.get("finished") or ck.state.get("fingerprint") != fp):
            return None
        if ck.state.get("finished"):
            raise AlreadyFinished(f"Nothing to resume: the newest checkpoint of '{cfg.name}' ({ck.path}) belongs to "
                                  f"run {ck.state['finished']}, which finished and wrote its LoRA. No new file was "
                                  "written. Fix: clear resume_from to train a new LoRA of this name.")
    else:
        p = Path(mode).expanduser()
        found = [c for c in complete_checkpoints(p.parent) if c.path == p]
        if not found:
            raise LoraStudioError(f"resume_from='{mode}' is not a complete checkpoint folder. Fix: give a "
                                  "step-NNNNNN folder from the job's checkpoints, or 'latest'.")
        ck = found[0]
    old_fp = ck.state.get("fingerprint", {})
    # A field missing from an old fingerprint (max_grad_norm, added later) is not held against it.
    diff = {k: (old_fp.get(k), v) for k, v in fp.items() if k in old_fp and old_fp.get(k) != v}
    diff.update({k: (None, fp[k]) for k in ("base_sha256", "dataset_sha256") if k in fp and k not in old_fp})
    if diff:
        k, (old, new) = next(iter(diff.items()))
        raise LoraStudioError(f"Checkpoint {ck.path.name} was made with other settings ({len(diff)} differ; e.g. "
                              f"{k} was {old!r}, now {new!r}). Fix: restore those settings to resume, or clear "
                              "resume_from to start a new run.")
    return ck


class AlreadyFinished(LoraStudioError):
    """resume_from='latest' pointed at a run that completed: there is nothing to continue."""


def mark_finished(cfg, job_id: str, resumed_from: Path | None = None) -> None:
    """Tell "auto"/"latest" that this run completed: its newest checkpoint, and the one it resumed from."""
    targets = complete_checkpoints(job_root(cfg, job_id))[-1:]
    if resumed_from is not None:
        targets += [c for c in complete_checkpoints(Path(resumed_from).parent) if c.path == Path(resumed_from)]
    for ck in targets:
        try:
            write_json_atomic(ck.path / "state.json", dict(ck.state, finished=job_id), overwrite=True)
        except OSError as e:
            log.warning("could not mark checkpoint %s as finished (%s): resume 'auto' may offer it again", ck.path, e)
