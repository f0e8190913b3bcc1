"""One training job from config to files: the function the nodes and the CLI both call.

dataset checked → job record opened → base model loaded (offline) → latents / embeddings
cached → LoRA trained → file exported atomically → job record closed. Anything the run changes
globally (grad mode, RNG, accelerate's state, device memory) is restored in `finally`.
"""
from __future__ import annotations

import contextlib
import dataclasses
import gc
import hashlib
import json
import logging
import os
import secrets
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import torch

from .config import TrainConfig
from .data import Dataset, LatentCache, check_dataset, plan_buckets
from .data.quality import file_sha256 as bytes_sha256
from .encode import ItemEncoder, square_sizes, weights_sha256
from .errors import ConfigError, ExportError, LoraStudioError, Problem, TrainingCancelled
from .interop import target_warnings
from .atomic import folder_problem, write_json_atomic, write_png_atomic
from .export import SAVE_DTYPES, adapter_config, kohya_state_dict, lora_metadata, sanitize_name, save_lora
from . import checkpoint
from .commands import headless_command, job_commands
from .runstate import clean_partials, mark_interrupted_records, this_process
from .loop import Callbacks, Trainer, TrainResult
from . import tracking
from .models import BaseModel, load_base_model

log = logging.getLogger("lora_studio.job")


@dataclass
class JobResult:
    lora_path: Path | None
    record_path: Path
    record: dict[str, Any]
    train: TrainResult | None
    base: BaseModel | None = None  # kept only when the caller asked (keep_model=True)
    tensors: dict[str, torch.Tensor] = field(default_factory=dict)  # kohya-keyed LoRA
    metadata: dict[str, str] = field(default_factory=dict)  # the file's ss_* / modelspec.* header
    adapter_config: dict[str, Any] = field(default_factory=dict)
    family: str = ""
    base_fingerprint: torch.Tensor | None = None  # first UNet weights: tells whether a MODEL is the same base
    record_error: str | None = None  # the LoRA was written but the final record write failed (disk full)


def file_sha256(path: Path, cache_dir: Path | None = None, remember: bool = True) -> str:
    """sha256 of a file (a diffusers folder: of its UNet weights), cached by path, size and mtime.
    `remember=False` reads the cache but writes nothing (a run that may still fail must leave no file)."""
    if path.is_dir():
        files = sorted((path / "unet").glob("*.safetensors")) or sorted((path / "unet").glob("*.bin"))
        return hashlib.sha256(b"".join(bytes.fromhex(file_sha256(f, cache_dir, remember)) for f in files)).hexdigest()
    st = path.stat()
    key = f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}"
    cache_file = cache_dir / "hashes.json" if cache_dir else None
    cache: dict[str, str] = {}
    if cache_file and cache_file.is_file():
        with contextlib.suppress(ValueError, OSError):
            cache = json.loads(cache_file.read_text())
    if key in cache:
        return cache[key]
    digest = bytes_sha256(path)
    if cache_file and remember:
        cache[key] = digest
        with contextlib.suppress(OSError, LoraStudioError):
            write_json_atomic(cache_file, cache, overwrite=True)
    return digest


def _lowest_priority(fn):
    """`fn` run in a pool thread at nice 19 (Linux sets a thread's priority by its id; elsewhere it runs as is)."""
    def run(*args, **kwargs):
        with contextlib.suppress(Exception):
            import threading

            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)
        return fn(*args, **kwargs)

    return run


def _versions() -> dict[str, str]:
    out = {"python": sys.version.split()[0]}
    for mod in ("torch", "diffusers", "peft", "accelerate", "transformers"):
        with contextlib.suppress(Exception):
            out[mod] = __import__(mod).__version__
    return out


def make_accelerator(cfg: TrainConfig, log_with: list[str] | None = None, project_dir: Path | None = None):
    """`log_with`: accelerate's tracker names (see tracking.log_with); nothing is written until init_trackers."""
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState, PartialState

    distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1
    if not distributed:
        # In a long-lived process (ComfyUI) a previous run's state would pin its mixed precision.
        AcceleratorState._reset_state(reset_partial_state=True)
        PartialState._reset_state()
    if cfg.mixed_precision == "fp16" and not torch.cuda.is_available():
        from .errors import ConfigError, Problem

        raise ConfigError([Problem("mixed_precision", "fp16", "'fp16' only on a CUDA GPU",
                                   "use 'bf16' or 'no' on this machine")])
    return Accelerator(mixed_precision=cfg.mixed_precision, gradient_accumulation_steps=cfg.gradient_accumulation_steps,
                       cpu=not torch.cuda.is_available(), log_with=log_with or None,
                       project_dir=str(project_dir) if project_dir is not None else None)


def resolve_cache_dir(cfg: TrainConfig) -> Path:
    return Path(cfg.cache_dir).expanduser() if cfg.cache_dir else Path(cfg.jobs_dir).expanduser().parent / "cache"


def new_job_id(name: str) -> str:
    return f"{datetime.now().strftime('%Y%m%d-%H%M%S')}-{sanitize_name(name)[:40]}-{secrets.token_hex(3)}"


def run_job(cfg: TrainConfig, callbacks: Callbacks | None = None, *, dataset: Dataset | None = None,
            base: BaseModel | None = None, keep_model: bool = False, write_lora: bool = True,
            latent_cache=None, record_extra: dict[str, Any] | None = None) -> JobResult:
    """Train one LoRA. Raises LoraStudioError subclasses with their explanations; writes no LoRA then.

    `record_extra`: more fields for the job record (ComfyUI: the user, prompt and session that queued it)."""
    run = _Run(cfg, callbacks or Callbacks(), write_lora)
    ds, report = run.check_inputs(dataset)
    run.new_record(ds, report, record_extra)
    with contextlib.ExitStack() as stack:
        _isolate(stack, run.threads)
        try:
            run.acc = make_accelerator(cfg, tracking.log_with(cfg.report_to, run.cb.message), run.job_dir)
            t_start = time.perf_counter()
            run.load_base(base, ds)
            trainer, resume = run.prepare(ds, latent_cache)
            train = trainer.run()
            result = run.finish(ds, train, resume, t_start, keep_model)
            run.done = True
            return result
        except TrainingCancelled as e:
            run.cancelled(e)
            raise
        except KeyboardInterrupt:
            run.close_record("interrupted", "stopped at once (Ctrl-C twice or a kill)")
            raise
        except BaseException as e:
            run.close_record("failed", f"{e.__class__.__name__}: {e}")
            raise
        finally:
            run.release(own_model=base is None, keep=keep_model)


def _isolate(stack: contextlib.ExitStack, threads: int) -> None:
    """ComfyUI runs nodes under inference mode; training needs autograd, and nothing here may change the
    caller's RNG streams or thread count."""
    stack.enter_context(torch.inference_mode(False))
    stack.enter_context(torch.enable_grad())
    stack.enter_context(torch.random.fork_rng(devices=range(torch.cuda.device_count())))
    stack.callback(torch.set_num_threads, torch.get_num_threads())
    torch.set_num_threads(threads)


class _Run:
    """What one run_job call carries from step to step: the record, the accelerator, the model, the checkpoints.

    The steps, in order: check_inputs → new_record → load_base → prepare (the record is written here) →
    Trainer.run → finish; a stop closes the record (cancelled / close_record), and release always runs."""

    def __init__(self, cfg: TrainConfig, cb: Callbacks, write_lora: bool):
        self.cfg, self.cb, self.write_lora = cfg, cb, write_lora
        self.acc = None
        self.bm: BaseModel | None = None
        self.pools: list[ThreadPoolExecutor] = []  # the background hashes (base file, VAE weights)
        self.hashing = self.vae_hash = None
        self.opened = False  # the record is on disk: a stop from here on closes it with a status
        self.done = False
        self.saved: dict[str, Path] = {}  # the newest checkpoint this run wrote: a stopped run says where it is
        self.jobs_dir = Path(cfg.jobs_dir).expanduser()
        # CPU threads change float summation order, so results: pinned from the record (accelerate launch sets
        # OMP_NUM_THREADS=1, a plain run uses every core), recorded when the config leaves it to the machine.
        self.threads = cfg.num_threads or torch.get_num_threads()

    def check_inputs(self, dataset: Dataset | None):
        """Config, trackers, output folders and the dataset, before anything is written or loaded."""
        cfg = self.cfg
        cfg.validate()
        problems = tracking.reporter_problems(cfg.report_to) + output_folder_problems(cfg, self.write_lora)
        if problems:  # e.g. W&B asked for but not installed: say so before anything loads or trains
            raise ConfigError(problems)
        report = None
        if dataset is None:
            dataset, report = check_dataset(cfg.dataset, resolution=cfg.resolution, trigger_token=cfg.trigger_token,
                                            placeholder=cfg.placeholder, preset_key=cfg.preset,
                                            bucketed=cfg.aspect_buckets)
        for w in dataset.warnings:  # once, here: check_dataset logs its findings at DEBUG only (terminal and node)
            self.cb.message(f"dataset: {w}")
        return dataset, report

    def new_record(self, ds: Dataset, report, record_extra: dict[str, Any] | None) -> None:
        """The job record in memory; it reaches the disk once the model and data are known good (prepare)."""
        cfg = self.cfg
        _tidy_after_dead_runs(cfg, self.write_lora)
        self.job_id = new_job_id(cfg.name)
        self.job_dir = self.jobs_dir / self.job_id
        self.record_path = self.jobs_dir / f"{self.job_id}.json"
        self.record: dict[str, Any] = {
            "id": self.job_id, "status": "running", "created": datetime.now(timezone.utc).isoformat(),
            "config": dict(cfg.to_dict(), num_threads=self.threads), "command": headless_command(self.record_path),
            "commands": job_commands(self.record_path, cfg.mixed_precision), "folder": str(self.job_dir),
            "dataset": {"path": str(ds.root), "images": len(ds.samples), "warnings": ds.warnings,
                        "report": report.to_dict() if report is not None else None},
            "environment": _versions(),
            # who runs it: a record whose process is gone reads "interrupted", not "running" (see runstate)
            "process": this_process(),
            **(record_extra or {}),
        }

    def load_base(self, base: BaseModel | None, ds: Dataset) -> None:
        """The base model (the caller's, or loaded offline), its sha256 and what the record says about it."""
        cfg, record = self.cfg, self.record
        self.cb.message("loading base model")
        # The file's sha256 (3–4 s for a full SD 1.5 file unless cached) is read in the background while the model
        # loads and training starts: only resuming, class pictures, checkpoints and the final file need it (issue
        # #12, time to first step). The latent cache keys by the VAE's own weights, hashed beside the setup.
        # (not remembered yet: a model that fails to load must leave no cache file behind).
        src = base.source if base else Path(cfg.base_model).expanduser()
        # Two single-thread pools: the file's hash runs at the lowest CPU priority (on a busy machine it must not
        # slow the load and the first steps it runs beside), the VAE's (needed at the first batch) at the normal one.
        self.pools = [ThreadPoolExecutor(1, thread_name_prefix="lora-studio-hash") for _ in range(2)]
        self.hashing = self.pools[0].submit(_lowest_priority(file_sha256), src, resolve_cache_dir(cfg), False) \
            if src.exists() else None
        self.bm = bm = base or load_base_model(cfg.base_model, cfg.model_type, cfg.model_config_dir,
                                               cfg.tokenizer_dir, cfg.prediction_type)
        self.vae_hash = self.pools[1].submit(weights_sha256, bm.vae)
        record["base_model"] = {"path": str(bm.source), "family": bm.family, "prediction_type": bm.prediction_type,
                                "sha256": None, "tokenizer": bm.extra.get("tokenizer")}
        record["dataset"]["sha256"] = ds.content_hash()
        record["warnings"] = target_warnings(bm.family, cfg.unet_target_modules, cfg.train_text_encoder,
                                             cfg.text_encoder_target_modules)
        for w in record["warnings"]:
            self.cb.message(f"warning: {w}")
        record["memory"] = _memory_check(cfg, bm.family, self.acc.device, self.cb)

    def base_sha256(self) -> str:
        """The base model's sha256 when first asked for (waits for the background hash); the record gets it too."""
        bm = self.record["base_model"]
        if bm.get("sha256") is None:
            if self.hashing is not None:
                self.hashing.result()  # the model loaded: now it is remembered (the file is read once per process)
            bm["sha256"] = file_sha256(self.bm.source, resolve_cache_dir(self.cfg))
        return bm["sha256"]

    def fingerprint(self) -> dict:
        return checkpoint.fingerprint(self.cfg, self.base_sha256(), self.record["dataset"]["sha256"])

    def prepare(self, ds: Dataset, latent_cache):
        """Encoded data, trackers, the Trainer (restored from a checkpoint to resume), the record on disk."""
        cfg, acc, bm, record = self.cfg, self.acc, self.bm, self.record
        # (resolve_resume reads no fingerprint without resume_from: a fresh run does not wait for the hash)
        resume = checkpoint.resolve_resume(cfg, self.fingerprint()) if (cfg.resume_from or "").strip() else None
        if latent_cache is None:
            latent_cache = LatentCache(resolve_cache_dir(cfg) / "latents", vae_id=self.vae_hash.result)
        self.latent_cache = latent_cache
        if cfg.with_prior_preservation:  # rendering class pictures moves the VAE: hash its weights before
            self.vae_hash.result()
        items, prior_items, encoder = _encode(cfg, bm, ds, acc, self.cb, latent_cache, record, self.base_sha256)
        if acc.is_main_process and acc.log_with:  # only now: a bad dataset or model leaves no event file
            tracking.start(acc, self.job_dir, self.job_id, cfg.to_dict())
            self.cb = _with_trackers(self.cb, acc)
        cb = self.cb
        trainer = Trainer(cfg, bm, items, acc, _stop_together(cb, acc), prior_items=prior_items,
                          checkpointer=_checkpointer(cfg, acc, self.fingerprint, self.job_id, lambda: trainer,
                                                     self.saved, cb),
                          previewer=_previewer(cfg, bm, ds, acc, cb, self.job_dir, lambda: trainer)
                          if cfg.preview_every >= 0 else None, encoder=encoder)
        if resume is not None:
            trainer.restore(*checkpoint.load(resume), meta=resume.state, step=resume.step)
            record["resumed_from"] = str(resume.path)
            cb.message(f"resuming from {resume.path.name} (step {resume.step} of {cfg.max_train_steps})")
        # The record appears once the inputs are known good: a bad dataset or model writes nothing.
        if self.hashing is None or self.hashing.done():
            self.base_sha256()  # (otherwise it is still being read: the finished record has it)
        if acc.is_main_process:
            write_json_atomic(self.record_path, record, overwrite=True)
        self.opened = True
        return trainer, resume

    def finish(self, ds: Dataset, train: TrainResult, resume, t_start: float, keep_model: bool) -> JobResult:
        """The LoRA's tensors and metadata, the file (unless the caller saves it), the closed record."""
        cfg, acc, bm, record = self.cfg, self.acc, self.bm, self.record
        record["metrics"] = _metrics(cfg, acc, train, t_start)
        cache = self.latent_cache
        record["latent_cache"] = cache.stats() if hasattr(cache, "stats") else None
        result = JobResult(None, self.record_path, record, train, bm if keep_model else None, family=bm.family,
                           base_fingerprint=base_fingerprint(bm.unet.conv_in.weight))
        if acc.is_main_process:
            result.tensors = kohya_state_dict(bm.family, train.unet_lora, train.text_encoder_loras, cfg.alpha,
                                              SAVE_DTYPES[cfg.save_precision], unet_config=bm.unet.config)
            result.metadata = lora_metadata(
                family=bm.family, cfg=cfg, base_hash=self.base_sha256(),
                dataset_hash=record["dataset"]["sha256"], n_images=len(ds.samples), steps=train.steps,
                prediction_type=bm.prediction_type, name=sanitize_name(cfg.name))
            result.adapter_config = adapter_config(cfg, bm.family)
            if self.write_lora:
                result.lora_path = record_output(record, *_save_or_keep(cfg, result, train.steps, self.saved))
            checkpoint.mark_finished(cfg, self.job_id, resume.path if resume is not None else None)
            self._write_final_record(result)
        acc.wait_for_everyone()
        return result

    def _write_final_record(self, result: JobResult) -> None:
        self.record.update(status="finished", finished=datetime.now(timezone.utc).isoformat())
        try:
            write_json_atomic(self.record_path, self.record, overwrite=True)
        except LoraStudioError as e:  # the LoRA is written: the run succeeded; say what is missing
            result.record_error = (f"The LoRA was written, but the job record {self.record_path} could not be "
                                   f"updated ({e}). It will read 'interrupted'; the LoRA is complete.")
            self.cb.message(f"warning: {result.record_error}")

    def cancelled(self, e: TrainingCancelled) -> None:
        """A cancel names the checkpoint to resume from (and says if the last one could not be written)."""
        saved = self.saved
        e.checkpoint = saved.get("path") if e.step else None
        e.record_path = self.record_path if self.opened else None
        if saved.get("error") and e.step:
            e.args = (f"{e} But the checkpoint of step {e.step} could not be written: {saved['error']}"
                      + (f" The newest one that was: {e.checkpoint}." if e.checkpoint else ""),)
        if self.opened and e.checkpoint:
            self.record["checkpoint"] = str(e.checkpoint)
        self.close_record("cancelled", str(e))

    def close_record(self, status: str, message: str) -> None:
        if self.opened:
            _close_record(self.acc, self.record_path, self.record, status, message)

    def release(self, own_model: bool, keep: bool) -> None:
        """Device memory and trackers back, whatever happened (runs in `finally`)."""
        for pool in self.pools:  # a hash still being read (a run that stopped early) finishes on its own
            pool.shutdown(wait=False, cancel_futures=True)
        if not (keep and self.done):
            _free(self.bm if own_model else None)
        if self.acc is not None:
            if self.acc.trackers:
                tracking.end(self.acc)
            self.acc.free_memory()


def _tidy_after_dead_runs(cfg: TrainConfig, write_lora: bool) -> None:
    """Leftovers of runs that were killed: half-written files (only those of dead processes: a run going on
    in the same folders keeps its own) and records still saying "running"."""
    for folder in ([cfg.output_dir] if write_lora else []) + [cfg.jobs_dir]:
        clean_partials(folder)
    checkpoint.clean_leftovers(cfg)
    mark_interrupted_records(cfg.jobs_dir)


def _save_or_keep(cfg: TrainConfig, result: JobResult, steps: int, saved: dict) -> tuple[Path, Path]:
    """Write the LoRA; if that fails (disk full, folder gone), keep the trained adapter as a checkpoint so the
    hours of training are not lost, and say how to write the LoRA from it without training again."""
    try:
        return save_lora(Path(cfg.output_dir), cfg.name, result.tensors, result.metadata, result.adapter_config)
    except LoraStudioError as e:
        if not (saved.get("step") == steps and "error" not in saved):
            saved["save"](steps)
        kept = saved.get("path") if "error" not in saved and saved.get("step") == steps else None
        hint = (f" The trained adapter was kept as the checkpoint {kept}: run the same job again with "
                f"resume_from={kept} (and room on the disk) to write the LoRA without training again.") if kept \
            else " The trained adapter could not be kept either."
        raise ExportError(f"{e}{hint}") from None


def output_folder_problems(cfg: TrainConfig, write_lora: bool = True) -> list[Problem]:
    """Folders the run will write to, checked before hours of training rather than at the final save."""
    names = (["output_dir"] if write_lora else []) + ["jobs_dir"] + (["cache_dir"] if cfg.cache_dir else [])
    out = []
    for name in names:
        why = folder_problem(getattr(cfg, name))
        if why:
            out.append(Problem(name, getattr(cfg, name), "a folder this user can write to (made if missing)",
                               f"{why}: choose another folder"))
    return out


def _memory_check(cfg: TrainConfig, family: str, device: torch.device, cb: Callbacks) -> dict:
    """The run's estimated peak GPU memory against what is free now; says what to change if it will not fit."""
    from .memory import estimate_peak, fit_advice

    est = estimate_peak(family, cfg.resolution, cfg.train_batch_size, cfg.mixed_precision,
                        cfg.gradient_checkpointing, cfg.train_text_encoder)
    out = {"estimated_peak_gb": round(est.gb, 2), "basis": est.basis}
    if device.type == "cuda":
        free, total = torch.cuda.mem_get_info(device)
        out.update(free_gb=round(free / 1e9, 2), total_gb=round(total / 1e9, 2))
        advice = fit_advice(est, free / 1e9, batch=cfg.train_batch_size, checkpointing=cfg.gradient_checkpointing,
                            resolution=cfg.resolution, train_text_encoder=cfg.train_text_encoder)
        if advice:
            out["advice"] = advice
            cb.message(f"warning: {advice}")
        else:
            cb.message(f"GPU memory: this run needs ~{est.gb:.1f} GB ({est.basis}), {free / 1e9:.1f} GB are free")
    return out


def _encode(cfg: TrainConfig, bm: BaseModel, ds: Dataset, acc, cb: Callbacks, latent_cache, record: dict,
            base_sha):
    """Latents (and frozen text embeddings) once per run; class images too with prior preservation.

    On the CPU each item is encoded on first use (by the training loop, through the returned ItemEncoder):
    there encoding the whole dataset before step 1 was a third of the time to the first step (issue #12). On
    a GPU everything is encoded here, before training: there it takes well under a second per hundred
    pictures, and the VAE and text encoders (SDXL's: 3.6 GB in fp32) then leave the device before the UNet
    trains, which the memory estimate and its SDXL-in-10-GB figure assume."""
    sizes = plan_buckets(ds.image_sizes(), cfg.resolution) if cfg.aspect_buckets else \
        square_sizes(len(ds.samples), cfg.resolution)
    lazy = acc.device.type == "cpu"
    cb.message(f"{len(ds.samples)} images, {len(set(sizes))} size bucket(s): each encoded once"
               + (", on first use" if lazy else ""))
    # Text can be encoded once unless the encoders train or the tags are shuffled; caption dropout swaps in the
    # empty caption's embedding, computed once by the trainer.
    cache_text = not (cfg.train_text_encoder or cfg.shuffle_tags)
    if not cache_text:  # encoded every step (shuffled tags), or trained: they live on the device
        for te in bm.text_encoders:
            te.to(acc.device)
    encoder = ItemEncoder(bm, acc.device, cache_text, cfg.center_crop, latent_cache)
    items = encoder.items(ds, sizes, cfg.random_flip)
    items = [it for it, s in zip(items, ds.samples) for _ in range(max(1, s.repeats))]  # kohya repeat folders
    record["dataset"]["buckets"] = sorted({f"{w}x{h}" for w, h in sizes})
    prior_items = None
    if cfg.with_prior_preservation:
        from .prior import class_images

        cache_root = resolve_cache_dir(cfg) / "class_images"
        with acc.main_process_first():  # the main process renders; the others find the images cached
            samples = class_images(cfg, bm, acc.device, cache_root, model_id=base_sha(),
                                   callbacks=cb)
        class_ds = Dataset(root=samples[0].path.parent, samples=samples)
        prior_items = encoder.items(class_ds, square_sizes(len(samples), cfg.resolution), flip=False)
        record["prior"] = {"class_prompt": cfg.class_prompt, "class_images": len(samples),
                           "folder": str(class_ds.root)}
    if not lazy:
        encoder.ensure(items + (prior_items or []))
    encoder.release()  # (eager: done already) the VAE is not needed until previews: device memory for the UNet
    return items, prior_items, encoder


def _stop_together(cb: Callbacks, acc) -> Callbacks:
    """With several processes (accelerate launch), Ctrl-C/SIGTERM reach each one at a slightly different moment.
    The loop polls before every micro-batch on every process alike, so the flags are summed there: all stop at
    the same micro-batch, or the ones going on would wait forever in the next gradient all-reduce."""
    if acc.num_processes <= 1 or cb.should_stop is None:
        return cb
    local = cb.should_stop

    def should_stop() -> bool:
        flag = torch.tensor([1.0 if local() else 0.0], device=acc.device)
        return bool(acc.reduce(flag, reduction="sum").item() > 0)

    return dataclasses.replace(cb, should_stop=should_stop)


def _with_trackers(cb: Callbacks, acc) -> Callbacks:
    """The caller's callbacks, with every step and preview also going to accelerate's trackers (TensorBoard, W&B)."""
    def on_step(info):
        tracking.log_step(acc, info)
        if cb.on_step:
            cb.on_step(info)

    def on_preview(step, images, prompts, negative):
        tracking.log_images(acc, step, "preview" if len(images) == len(prompts) else "bias_check", images)
        if cb.on_preview:
            cb.on_preview(step, images, prompts, negative)

    return Callbacks(on_step=on_step, should_stop=cb.should_stop, on_message=cb.on_message, on_preview=on_preview)


def _checkpointer(cfg: TrainConfig, acc, fp: Callable[[], dict], job_id: str, get_trainer, saved: dict, cb: Callbacks):
    def save(step: int) -> None:
        trainer = get_trainer()
        if acc.is_main_process:
            optim, rng, meta = trainer.state()
            try:
                saved["path"] = checkpoint.save(checkpoint.job_root(cfg, job_id), step, trainer.adapter_tensors(),
                                                optim, rng, dict(meta, fingerprint=fp(), job_id=job_id),
                                                keep=cfg.checkpoints_total_limit)
                saved.pop("error", None)
            except LoraStudioError as e:
                # A checkpoint is a safety net: losing one must not stop a run that may still finish (the
                # final save says so if the disk stays full). A Cancel reports it in its message.
                saved["error"] = str(e)
                cb.message(f"warning: {e}" + (" Training goes on." if step < cfg.max_train_steps else ""))
            saved["step"] = step
        acc.wait_for_everyone()

    saved["save"] = save
    return save  # also without checkpointing_steps: Cancel always checkpoints


def _previewer(cfg: TrainConfig, bm: BaseModel, ds: Dataset, acc, cb: Callbacks, job_dir: Path, get_trainer):
    """Preview images at `preview_every` steps and at the end, saved in the job folder and sent to the caller."""
    from .preview import grid, negative_prompt, render

    prompts = cfg.preview_prompts or [ds.samples[0].caption]

    def preview(step: int) -> None:
        if not acc.is_main_process:
            return
        trainer = get_trainer()
        unet = acc.unwrap_model(trainer.models[0])
        final = step >= cfg.max_train_steps
        sets = [("preview", prompts)] + ([("bias_check", cfg.bias_check_prompts)] if final and cfg.bias_check_prompts
                                          else [])
        for tag, ps in sets:
            images = render(bm, unet, ps, cfg, acc.device, acc.autocast, extra_negative=ds.negative_prompt)
            out = job_dir / "previews"
            out.mkdir(parents=True, exist_ok=True)
            for i, im in enumerate(images):
                # overwrite: a resumed run renders the step it resumed from again
                write_png_atomic(out / f"{tag}-step{step:06d}-{i}.png", im, overwrite=True)
            if tag == "bias_check":
                write_png_atomic(job_dir / "bias_check_grid.png", grid(images), overwrite=True)
            if cb.on_preview:
                cb.on_preview(step, images, ps, negative_prompt(cfg, ds.negative_prompt))

    return preview


def _metrics(cfg: TrainConfig, acc, train: TrainResult, t_start: float) -> dict[str, Any]:
    done = train.steps - train.resumed_from
    return {
        "losses": train.losses, "learning_rates": train.lrs, "steps": train.steps, "resumed_from_step": train.resumed_from,
        "loss_terms": train.extra.get("loss_terms", {}),
        "eval_loss_before": train.eval_loss_before, "eval_loss_after": train.eval_loss_after,
        "train_seconds": train.seconds, "total_seconds": time.perf_counter() - t_start,
        # from the job's start (model load, caching) to the end of the first optimizer step
        "time_to_first_step_s": train.loop_started - t_start + train.first_step_s,
        "images_per_second": done * cfg.train_batch_size * cfg.gradient_accumulation_steps * acc.num_processes
        / max(train.seconds, 1e-9),
    }


def base_fingerprint(conv_in_weight: torch.Tensor) -> torch.Tensor:
    """A few of the UNet's first-layer weights, in fp32: the same in diffusers and LDM layouts."""
    return conv_in_weight.detach().flatten()[:256].float().cpu().clone()


def record_output(record: dict, lora_path: Path, adapter_cfg_path: Path) -> Path:
    """Note in the job record where the LoRA went (and its sha256, to tell copies apart)."""
    record["outputs"] = {"lora": str(lora_path), "adapter_config": str(adapter_cfg_path),
                         "lora_sha256": file_sha256(lora_path)}
    return lora_path


def _close_record(acc, record_path: Path, record: dict, status: str, message: str) -> None:
    if acc is None or not acc.is_main_process:
        return
    record.update(status=status, message=message, finished=datetime.now(timezone.utc).isoformat())
    with contextlib.suppress(Exception):  # the record must never mask the real error
        write_json_atomic(record_path, record, overwrite=True)


def _free(bm: BaseModel | None) -> None:
    if bm is not None:
        for m in [bm.unet, bm.vae, *bm.text_encoders]:
            with contextlib.suppress(Exception):
                m.to("meta")
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
