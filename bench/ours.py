"""Our side of the benchmark: trainer.job.run_job with the guide script's settings."""
from __future__ import annotations

import json
from pathlib import Path


def train_config(model_dir: Path, data_dir: Path, work: Path, cfg: dict, steps: int, rank: int,
                 precision: str, seed: int = 42, compile_mode: str | None = None):
    """The job the guide's script runs, as a TrainConfig: rank = alpha, attention targets, constant lr 1e-4,
    no warm-up, no accumulation, no min-SNR, clip 1.0, AdamW defaults, no text-encoder training."""
    from trainer.config import TrainConfig

    extra = {} if compile_mode is None else {"compile": compile_mode}
    return TrainConfig(**extra,
        name=f"bench_{cfg['name']}", base_model=str(model_dir), model_type=cfg["family"], dataset=str(data_dir),
        output_dir=str(work / "loras"), jobs_dir=str(work / "jobs"), cache_dir=str(work / "cache"),
        resolution=cfg["resolution"], center_crop=True, random_flip=False,
        rank=rank, alpha=float(rank), unet_target_modules=["to_q", "to_k", "to_v", "to_out.0"],
        train_text_encoder=False, learning_rate=1e-4, lr_scheduler="constant", lr_warmup_steps=0,
        max_train_steps=steps, train_batch_size=cfg["batch"], gradient_accumulation_steps=1, max_grad_norm=1.0,
        mixed_precision=precision, gradient_checkpointing=cfg["gradient_checkpointing"], snr_gamma=0.0,
        seed=seed, checkpointing_steps=0, test_mode=cfg["resolution"] < 256,
        preview_every=-1)  # the script renders no validation images either (no --validation_prompt)


def write_job(path: Path, **kw) -> Path:
    cfg = train_config(**kw)
    path.write_text(cfg.to_json())
    return path


def run_from_file(job_json: str) -> dict:
    """Run the job; return the job record's metrics (losses shortened to first/last)."""
    from trainer.config import TrainConfig
    from trainer.job import run_job

    cfg = TrainConfig.load(job_json)
    result = run_job(cfg)
    m = dict(result.record.get("metrics", {}))
    losses = m.pop("losses", [])
    m.pop("learning_rates", None)
    m["first_loss"] = losses[0] if losses else None
    m["last_loss"] = losses[-1] if losses else None
    m["lora_path"] = str(result.lora_path) if result.lora_path else None
    return json.loads(json.dumps(m, default=str))
