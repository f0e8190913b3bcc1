"""One typed, validated training config, the guide's three presets, and a JSON round trip.

Validation follows the AI4ArtsEd guide ("Auflösung 256–1536 px, Lernrate ≥ 1e-6, Schritte > 0 und
nur gültige Scheduler") and adds ranges for every other field. All problems are collected and
raised together, each naming the field, the value, the allowed range and a fix, so a person
fixes a config in one pass instead of one error at a time.
"""
from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from .errors import ConfigError, Problem

SCHEDULERS = ("linear", "cosine", "cosine_with_restarts", "polynomial", "constant", "constant_with_warmup")
MIXED_PRECISION = ("no", "fp16", "bf16")
SAVE_PRECISION = ("fp16", "bf16", "fp32")
MODEL_TYPES = ("auto", "sd15", "sd2", "sdxl")
PREDICTION_TYPES = ("auto", "epsilon", "v_prediction")
# Module names (suffixes) LoRA may target. Attention projections are the guide's anchor; the
# feed-forward and projection layers are the usual "more capacity" additions.
UNET_TARGETS = ("to_q", "to_k", "to_v", "to_out.0", "proj_in", "proj_out", "ff.net.0.proj", "ff.net.2")
TEXT_ENCODER_TARGETS = ("q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2")

RESOLUTION_MIN, RESOLUTION_MAX = 256, 1536
# The guide's SAFETY_NEGATIVE_TERMS (server/config.py): always appended to preview negatives. An operator
# replaces the list per config or for the whole server via LORA_STUDIO_SAFETY_NEGATIVE_TERMS (comma-separated).
SAFETY_NEGATIVE_TERMS = ("nsfw", "nudity", "violence", "gore", "blood", "weapon", "hate symbol", "drugs")
REPORTERS = ("tensorboard", "wandb")
# Below the guide's floor only for smoke tests with tiny models: the result is no usable LoRA.
TEST_RESOLUTION_MIN = 32


@dataclass
class TrainConfig:
    """Everything one LoRA run needs. Field docs are the tooltips' source."""

    # --- what to train on and where the result goes
    name: str = "my_lora"  # file name of the LoRA (sanitised; never overwrites)
    preset: str = "fotostudio"  # the preset this config started from (informational once applied)
    base_model: str = ""  # single-file checkpoint (.safetensors/.ckpt) or a diffusers folder
    model_type: str = "auto"  # auto-detected from the file; or sd15 / sd2 / sdxl
    model_config_dir: str = ""  # optional diffusers-layout folder with configs for a single file
    tokenizer_dir: str = ""  # optional folder with CLIP vocab.json + merges.txt
    dataset: str = ""  # dataset folder (images/ + metadata.jsonl, or images with caption files)
    trigger_token: str = ""  # replaces the placeholder in every prompt
    placeholder: str = "<my_token>"
    output_dir: str = "runs/loras"  # where the .safetensors goes (ComfyUI: models/loras)
    jobs_dir: str = "runs/jobs"  # job records (the guide's lora/jobs/<id>.json)
    cache_dir: str = ""  # latent cache; empty = next to the job records

    # --- images and captions
    resolution: int = 512
    aspect_buckets: bool = True  # portrait/landscape pictures keep their shape (area ≈ resolution²)
    center_crop: bool = True
    random_flip: bool = False
    caption_dropout: float = 0.0  # share of steps that see an empty caption (helps the LoRA work without prompt)
    shuffle_tags: bool = False  # shuffle comma-separated tags each step, keeping the first keep_tags in place
    keep_tags: int = 1

    # --- the adapter
    rank: int = 16
    alpha: float = 16.0
    lora_dropout: float = 0.0
    unet_target_modules: list[str] = field(default_factory=lambda: ["to_q", "to_k", "to_v", "to_out.0"])
    train_text_encoder: bool = False
    text_encoder_target_modules: list[str] = field(default_factory=lambda: ["q_proj", "k_proj", "v_proj", "out_proj"])

    # --- optimisation
    learning_rate: float = 1e-4
    text_encoder_lr: float = 5e-5
    lr_scheduler: str = "cosine"
    lr_warmup_steps: int = 100
    lr_num_cycles: int = 1
    lr_power: float = 1.0
    max_train_steps: int = 2000
    train_batch_size: int = 1
    gradient_accumulation_steps: int = 4
    max_grad_norm: float = 1.0
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    adam_weight_decay: float = 1e-2
    adam_epsilon: float = 1e-8
    mixed_precision: str = "no"
    gradient_checkpointing: bool = False
    snr_gamma: float = 0.0  # 0 = off; 5.0 is the paper's value
    noise_offset: float = 0.0
    prediction_type: str = "auto"  # auto = what the base model was trained for
    seed: int = 42

    save_precision: str = "fp16"  # dtype of the saved LoRA: fp16 (half the size), bf16 or fp32

    # --- previews (the guide's --validation_prompt) and the bias check
    preview_prompts: list[str] = field(default_factory=list)  # empty = one prompt from the dataset's captions
    preview_every: int = 0  # steps between previews; 0 = only at the end; -1 = no previews
    preview_seed: int = 1234
    preview_sampling_steps: int = 20
    preview_guidance: float = 7.5
    negative_prompt: str = ""  # added to every preview, before the safety terms
    safety_negative_terms: list[str] = field(default_factory=lambda: list(SAFETY_NEGATIVE_TERMS))
    bias_check_prompts: list[str] = field(default_factory=list)  # varied prompts rendered as a grid at the end

    # --- DreamBooth-style prior preservation
    with_prior_preservation: bool = False
    class_prompt: str = ""  # e.g. "portrait of a person"
    class_data_dir: str = ""  # your class images; empty = generate them once with the base model
    num_class_images: int = 50
    class_sampling_steps: int = 25
    class_seed: int = 0
    prior_loss_weight: float = 1.0

    # --- experiment logging
    report_to: list[str] = field(default_factory=lambda: ["tensorboard"])  # tensorboard, wandb; [] = none

    # --- run control
    checkpointing_steps: int = 500
    checkpoints_total_limit: int = 3
    resume_from: str = ""  # a checkpoint folder, or "latest" (the newest of this job's name)
    test_mode: bool = False  # allow 32–255 px for pipeline smoke tests with tiny models

    # ------------------------------------------------------------------ validation
    def problems(self) -> list[Problem]:
        p: list[Problem] = []

        def need(ok: bool, name: str, allowed: str, fix: str) -> None:
            if not ok:
                p.append(Problem(name, getattr(self, name), allowed, fix))

        def num(name: str, lo: float, hi: float, fix: str, integer: bool = False) -> None:
            v = getattr(self, name)
            ok = isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
            ok = ok and (not integer or float(v).is_integer()) and lo <= v <= hi
            need(ok, name, f"{'an integer' if integer else 'a number'} from {lo:g} to {hi:g}", fix)

        need(isinstance(self.name, str) and self.name.strip() != "", "name",
             "a non-empty name", "give the LoRA a short name such as 'watercolor_style'")
        lo = TEST_RESOLUTION_MIN if self.test_mode else RESOLUTION_MIN
        num("resolution", lo, RESOLUTION_MAX, "use 512 for SD 1.5, 768 for SD 2.x, 1024 for SDXL", integer=True)
        if isinstance(self.resolution, int) and self.resolution % 8:
            need(False, "resolution", "a multiple of 8 (the VAE downsamples by 8)",
                 f"use {max(lo, self.resolution // 64 * 64)} or {self.resolution // 64 * 64 + 64}")
        num("caption_dropout", 0.0, 0.9, "use 0 (off) or 0.05–0.1")
        num("keep_tags", 0, 100, "use 1 to keep the trigger tag first", integer=True)
        num("rank", 1, 256, "use 4–16 for a style or subject, up to 64 for fine detail", integer=True)
        num("alpha", 0.01, 1024, "set alpha equal to rank (strength 1.0) or half of it for gentler updates")
        num("lora_dropout", 0.0, 0.9, "use 0.0, or 0.05–0.1 against overfitting")
        num("learning_rate", 1e-6, 1e-2, "use 1e-4 for UNet LoRA; lower it (5e-5) if the loss jumps")
        num("text_encoder_lr", 1e-7, 1e-2, "use about half the UNet learning rate, e.g. 5e-5")
        need(self.lr_scheduler in SCHEDULERS, "lr_scheduler", ", ".join(SCHEDULERS), "pick 'cosine' if unsure")
        num("lr_warmup_steps", 0, 1_000_000, "use about 5 % of max_train_steps", integer=True)
        if isinstance(self.lr_warmup_steps, int) and isinstance(self.max_train_steps, int) \
                and self.lr_warmup_steps >= self.max_train_steps > 0:
            need(False, "lr_warmup_steps", f"fewer than max_train_steps ({self.max_train_steps})",
                 f"use at most {max(0, self.max_train_steps // 10)}")
        num("lr_num_cycles", 1, 100, "use 1 (restarts only matter for cosine_with_restarts)", integer=True)
        num("lr_power", 0.1, 10, "use 1.0 (linear decay) for the polynomial scheduler")
        num("max_train_steps", 1, 1_000_000, "steps must be > 0; 800–3000 is typical", integer=True)
        num("train_batch_size", 1, 256, "use 1–4 and raise gradient_accumulation_steps instead", integer=True)
        num("gradient_accumulation_steps", 1, 1024, "use 1–8", integer=True)
        num("max_grad_norm", 0.0, 1000, "use 1.0 (0 turns clipping off)")
        num("adam_beta1", 0.0, 0.999999, "use 0.9")
        num("adam_beta2", 0.0, 0.999999, "use 0.999")
        num("adam_weight_decay", 0.0, 1.0, "use 1e-2")
        num("adam_epsilon", 1e-12, 1e-3, "use 1e-8")
        need(self.mixed_precision in MIXED_PRECISION, "mixed_precision", ", ".join(MIXED_PRECISION),
             "use 'bf16' on recent NVIDIA GPUs, 'fp16' on older ones, 'no' on CPU")
        need(self.save_precision in SAVE_PRECISION, "save_precision", ", ".join(SAVE_PRECISION),
             "use 'fp16' (the usual) or 'fp32' for exact reloads")
        num("snr_gamma", 0.0, 100, "use 0 (off) or 5.0 (min-SNR weighting)")
        num("noise_offset", 0.0, 1.0, "use 0 (off) or about 0.05 for darker/brighter images")
        need(self.prediction_type in PREDICTION_TYPES, "prediction_type", ", ".join(PREDICTION_TYPES),
             "leave 'auto' unless the base model's card says otherwise")
        need(self.model_type in MODEL_TYPES, "model_type", ", ".join(MODEL_TYPES), "leave 'auto'")
        num("seed", 0, 2**32 - 1, "use any whole number, e.g. 42", integer=True)
        num("checkpointing_steps", 0, 1_000_000, "use 0 (off) or about a quarter of max_train_steps", integer=True)
        num("checkpoints_total_limit", 1, 1000, "keep the last 2–5 checkpoints", integer=True)
        for f in fields(self):  # types of the free-form fields (JSON from a user may carry anything)
            v = getattr(self, f.name)
            if f.type == "bool" and not isinstance(v, bool):
                need(False, f.name, "true or false", "write true or false without quotes")
            elif f.type == "str" and not isinstance(v, str):
                need(False, f.name, "text", "put the value in quotes")
        num("preview_every", -1, 1_000_000, "use 0 (only at the end), -1 (none) or e.g. a quarter of max_train_steps",
            integer=True)
        num("preview_seed", 0, 2**32 - 1, "use any whole number", integer=True)
        num("preview_sampling_steps", 1, 150, "use 20–30", integer=True)
        num("preview_guidance", 1.0, 30.0, "use 7.5 (SD 1.5) or 5–7 (SDXL)")
        num("num_class_images", 1, 10_000, "use 50–200 (about 100 × the instance images is common)", integer=True)
        num("class_sampling_steps", 1, 150, "use 25", integer=True)
        num("class_seed", 0, 2**32 - 1, "use any whole number", integer=True)
        num("prior_loss_weight", 0.0, 10.0, "use 1.0")
        if self.with_prior_preservation is True and not (self.class_prompt or "").strip():
            need(False, "class_prompt", "a prompt when with_prior_preservation is on",
                 "describe the class, e.g. 'portrait of a person', or turn prior preservation off")
        for name in ("preview_prompts", "safety_negative_terms", "bias_check_prompts"):
            v = getattr(self, name)
            need(isinstance(v, list) and all(isinstance(x, str) for x in v), name, "a list of texts",
                 'write a JSON list such as ["portrait of sks", "sks at the beach"]')
        need(isinstance(self.report_to, list) and all(r in REPORTERS for r in self.report_to), "report_to",
             "a list of " + ", ".join(REPORTERS) + " (or [] for none)", 'use ["tensorboard"]')
        for name, allowed in (("unet_target_modules", UNET_TARGETS), ("text_encoder_target_modules", TEXT_ENCODER_TARGETS)):
            v = getattr(self, name)
            ok = isinstance(v, list) and len(v) > 0 and all(m in allowed for m in v)
            need(ok, name, "a non-empty list of " + ", ".join(allowed), "use the default attention projections")
        return p

    def validate(self) -> "TrainConfig":
        problems = self.problems()
        if problems:
            raise ConfigError(problems)
        return self

    # ------------------------------------------------------------------ serialisation
    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "TrainConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError([Problem(k, data[k], "a known field", "remove it or check its spelling; "
                                       "known fields are listed by `python -m trainer presets`") for k in unknown])
        return cls(**{k: (list(v) if isinstance(v, tuple) else v) for k, v in data.items()})

    @classmethod
    def from_json(cls, text: str) -> "TrainConfig":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise ConfigError([Problem("<job json>", text[:40], "valid JSON", f"fix the syntax error: {e}")]) from None
        if isinstance(data, dict) and "config" in data and isinstance(data["config"], dict):
            data = data["config"]  # a job record is accepted as a job file too
        if not isinstance(data, dict):
            raise ConfigError([Problem("<job json>", type(data).__name__, "a JSON object", "wrap fields in { }")])
        return cls.from_dict(data)

    @classmethod
    def load(cls, path: str | Path) -> "TrainConfig":
        return cls.from_json(Path(path).read_text(encoding="utf-8"))

    def replace(self, **changes: Any) -> "TrainConfig":
        return dataclasses.replace(self, **changes)


def field_names() -> list[str]:
    return [f.name for f in fields(TrainConfig)]
