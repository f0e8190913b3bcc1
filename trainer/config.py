"""One typed, validated training config, and a JSON round trip.

Each field is defined once, with `opt(default, help, range or choices, fix)`: its type comes from the
annotation, the rest rides in the dataclass field's metadata (peft's `LoraConfig` style). Validation,
the Configure LoRA node's widgets and tooltips, `locales/en/nodeDefs.json`, the CLI's field list
(`lora-studio presets`) and `web/presets.json` are all derived from these definitions;
`tools/generate.py` writes the generated files and a test fails when they drift.

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
COMPILE_MODES = ("auto", "on", "off")
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
SEED_MAX = 2**32 - 1
LIST_FIX = 'write a JSON list such as ["portrait of sks", "sks at the beach"]'


@dataclass(frozen=True)
class FieldSpec:
    """What one config field allows, beyond its type. Read with `spec(name)`."""

    help: str
    lo: float | None = None  # numbers: inclusive range
    hi: float | None = None
    choices: tuple[str, ...] | None = None  # texts: the allowed values; lists: the allowed items
    nonempty: bool = False  # texts and lists: empty is an error
    fix: str = ""  # what to write instead (the "Fix:" of the error)
    group: str = ""  # section in `lora-studio presets` and web/presets.json


def opt(default: Any, help: str, **spec: Any) -> Any:
    """A dataclass field with its one definition: default, help, range/choices and fix."""
    meta = {"spec": FieldSpec(help, **spec)}
    if isinstance(default, (list, tuple)):
        items = list(default)
        return field(default_factory=lambda: list(items), metadata=meta)
    return field(default=default, metadata=meta)


@dataclass
class TrainConfig:
    """Everything one LoRA run needs. Each field's help is the source of its tooltip and docs."""

    # --- what to train on and where the result goes
    name: str = opt("my_lora", "File name of the LoRA (in ComfyUI: models/loras). An existing file is never "
                    "overwritten: a number is added.",
                    nonempty=True, fix="give the LoRA a short name such as 'watercolor_style'", group="output")
    preset: str = opt("fotostudio", "The preset this config started from (informational once applied).", group="output")
    base_model: str = opt("", "Single-file checkpoint (.safetensors/.ckpt) or a diffusers folder.", group="model")
    model_type: str = opt("auto", "Model family: auto-detected from the file, or sd15 / sd2 / sdxl.",
                          choices=MODEL_TYPES, fix="leave 'auto'", group="model")
    model_config_dir: str = opt("", "Optional diffusers-layout folder with configs for a single-file checkpoint.",
                                group="model")
    tokenizer_dir: str = opt("", "Optional folder with the CLIP vocab.json + merges.txt.", group="model")
    dataset: str = opt("", "Dataset folder (images/ + metadata.jsonl, or images with caption files).", group="data")
    trigger_token: str = opt("", "The word that will call up your concept, e.g. 'wcfox'. Replaces the "
                             "placeholder in every prompt. Avoid special characters.", group="data")
    placeholder: str = opt("<my_token>", "The text in your prompts that the trigger token replaces (the guide writes "
                          "<my_token>).", group="data")
    output_dir: str = opt("runs/loras", "Where the .safetensors goes (in ComfyUI: models/loras).", group="output")
    jobs_dir: str = opt("runs/jobs", "Where the job records go (the guide's lora/jobs/<id>.json).", group="output")
    cache_dir: str = opt("", "Latent cache folder; empty = next to the job records.", group="output")

    # --- images and captions
    resolution: int = opt(512, "Training size in pixels (256–1536; 512 for SD 1.5, 768 for SD 2.x, 1024 for SDXL).",
                          lo=RESOLUTION_MIN, hi=RESOLUTION_MAX,
                          fix="use 512 for SD 1.5, 768 for SD 2.x, 1024 for SDXL", group="images")
    aspect_buckets: bool = opt(True, "Portrait and landscape pictures keep their shape (area ≈ resolution²).",
                               group="images")
    center_crop: bool = opt(True, "Crop to the centre (off: a random crop each step).", group="images")
    random_flip: bool = opt(False, "Mirror pictures at random (only for subjects without a handedness).",
                            group="images")
    caption_dropout: float = opt(0.0, "Share of steps that see an empty caption (helps the LoRA work without a "
                                 "prompt).", lo=0.0, hi=0.9, fix="use 0 (off) or 0.05–0.1", group="images")
    shuffle_tags: bool = opt(False, "Shuffle comma-separated tags each step, keeping the first keep_tags in place.",
                             group="images")
    keep_tags: int = opt(1, "How many leading tags shuffle_tags keeps in place.", lo=0, hi=100,
                         fix="use 1 to keep the trigger tag first", group="images")

    # --- the adapter
    rank: int = opt(16, "LoRA rank: capacity and file size (4–32 typical).", lo=1, hi=256,
                    fix="use 4–16 for a style or subject, up to 64 for fine detail", group="adapter")
    alpha: float = opt(16.0, "LoRA alpha; the strength scales with alpha/rank.", lo=0.01, hi=1024,
                       fix="set alpha equal to rank (strength 1.0) or half of it for gentler updates", group="adapter")
    lora_dropout: float = opt(0.0, "Dropout inside the LoRA layers.", lo=0.0, hi=0.9,
                              fix="use 0.0, or 0.05–0.1 against overfitting", group="adapter")
    unet_target_modules: list[str] = opt(["to_q", "to_k", "to_v", "to_out.0"], "UNet layers (name suffixes) that "
                                         "get a LoRA.", choices=UNET_TARGETS, nonempty=True,
                                         fix="use the default attention projections", group="adapter")
    train_text_encoder: bool = opt(False, "Also adapt the text encoder(s): learns words better, needs more memory.",
                                   group="adapter")
    text_encoder_target_modules: list[str] = opt(["q_proj", "k_proj", "v_proj", "out_proj"], "Text-encoder layers "
                                                 "that get a LoRA when train_text_encoder is on.",
                                                 choices=TEXT_ENCODER_TARGETS, nonempty=True,
                                                 fix="use the default attention projections", group="adapter")

    # --- optimisation
    learning_rate: float = opt(1e-4, "Step size of the UNet LoRA (≥ 1e-6; 1e-4 is usual).", lo=1e-6, hi=1e-2,
                               fix="use 1e-4 for UNet LoRA; lower it (5e-5) if the loss jumps", group="optimiser")
    text_encoder_lr: float = opt(5e-5, "Step size of the text-encoder LoRA.", lo=1e-7, hi=1e-2,
                                 fix="use about half the UNet learning rate, e.g. 5e-5", group="optimiser")
    lr_scheduler: str = opt("cosine", "How the learning rate changes over the run (after the warmup).",
                            choices=SCHEDULERS, fix="pick 'cosine' if unsure", group="optimiser")
    lr_warmup_steps: int = opt(100, "Steps over which the learning rate rises from 0.", lo=0, hi=1_000_000,
                               fix="use about 5 % of max_train_steps", group="optimiser")
    lr_num_cycles: int = opt(1, "Restarts of the cosine_with_restarts schedule.", lo=1, hi=100,
                             fix="use 1 (restarts only matter for cosine_with_restarts)", group="optimiser")
    lr_power: float = opt(1.0, "Power of the polynomial schedule.", lo=0.1, hi=10,
                          fix="use 1.0 (linear decay) for the polynomial scheduler", group="optimiser")
    max_train_steps: int = opt(2000, "How many optimizer steps to train.", lo=1, hi=1_000_000,
                               fix="steps must be > 0; 800–3000 is typical", group="optimiser")
    train_batch_size: int = opt(1, "Images per step per GPU.", lo=1, hi=256,
                                fix="use 1–4 and raise gradient_accumulation_steps instead", group="optimiser")
    gradient_accumulation_steps: int = opt(4, "Steps whose gradients are summed before an update.", lo=1, hi=1024,
                                           fix="use 1–8", group="optimiser")
    max_grad_norm: float = opt(1.0, "Gradient clipping norm (0 = off).", lo=0.0, hi=1000,
                               fix="use 1.0 (0 turns clipping off)", group="optimiser")
    adam_beta1: float = opt(0.9, "AdamW beta1.", lo=0.0, hi=0.999999, fix="use 0.9", group="optimiser")
    adam_beta2: float = opt(0.999, "AdamW beta2.", lo=0.0, hi=0.999999, fix="use 0.999", group="optimiser")
    adam_weight_decay: float = opt(1e-2, "AdamW weight decay.", lo=0.0, hi=1.0, fix="use 1e-2", group="optimiser")
    adam_epsilon: float = opt(1e-8, "AdamW epsilon.", lo=1e-12, hi=1e-3, fix="use 1e-8", group="optimiser")
    mixed_precision: str = opt("no", "Compute precision: bf16 on recent NVIDIA GPUs, fp16 on older ones, 'no' on the CPU.",
                               choices=MIXED_PRECISION,
                               fix="use 'bf16' on recent NVIDIA GPUs, 'fp16' on older ones, 'no' on CPU",
                               group="optimiser")
    gradient_checkpointing: bool = opt(False, "Saves GPU memory for about 30 % more time per step.",
                                       group="optimiser")
    compile: str = opt("auto", "torch.compile the training step (CUDA graphs on a GPU): 'auto' compiles only where the "
                       "warm-up is paid back within the run; 'off' = eager; 'on' = always (falls back to eager, "
                       "saying why, where compiling fails).", choices=COMPILE_MODES,
                       fix="use 'auto', 'on' or 'off'", group="optimiser")
    snr_gamma: float = opt(0.0, "Min-SNR loss weighting (0 = off; 5.0 is the paper's value).", lo=0.0, hi=100,
                           fix="use 0 (off) or 5.0 (min-SNR weighting)", group="optimiser")
    noise_offset: float = opt(0.0, "Noise offset: lets the LoRA learn darker and brighter images.", lo=0.0, hi=1.0,
                              fix="use 0 (off) or about 0.05 for darker/brighter images", group="optimiser")
    prediction_type: str = opt("auto", "What the UNet predicts; auto = what the base model was trained for.",
                               choices=PREDICTION_TYPES, fix="leave 'auto' unless the base model's card says otherwise",
                               group="optimiser")
    seed: int = opt(42, "Same seed + same settings + same data = the same LoRA.", lo=0, hi=SEED_MAX,
                    fix="use any whole number, e.g. 42", group="optimiser")

    save_precision: str = opt("fp16", "Dtype of the saved LoRA: fp16 (half the size), bf16 or fp32.",
                              choices=SAVE_PRECISION, fix="use 'fp16' (the usual) or 'fp32' for exact reloads",
                              group="output")

    # --- previews (the guide's --validation_prompt) and the bias check
    preview_prompts: list[str] = opt([], "Prompts for the preview images; empty = one prompt from the dataset's "
                                     "captions.", fix=LIST_FIX, group="previews")
    preview_every: int = opt(0, "Steps between previews; 0 = only at the end; -1 = no previews.", lo=-1,
                             hi=1_000_000, fix="use 0 (only at the end), -1 (none) or e.g. a quarter of "
                             "max_train_steps", group="previews")
    preview_seed: int = opt(1234, "Seed of the preview images.", lo=0, hi=SEED_MAX, fix="use any whole number",
                            group="previews")
    preview_sampling_steps: int = opt(20, "Sampling steps per preview image.", lo=1, hi=150, fix="use 20–30",
                                      group="previews")
    preview_guidance: float = opt(7.5, "Classifier-free guidance of the previews.", lo=1.0, hi=30.0,
                                  fix="use 7.5 (SD 1.5) or 5–7 (SDXL)", group="previews")
    negative_prompt: str = opt("", "Added to every preview's negative prompt, before the safety terms.",
                               group="previews")
    safety_negative_terms: list[str] = opt(list(SAFETY_NEGATIVE_TERMS), "Always appended to preview negatives "
                                           "(the guide's SAFETY_NEGATIVE_TERMS).", fix=LIST_FIX, group="previews")
    bias_check_prompts: list[str] = opt([], "Varied prompts rendered as a grid at the end (the guide's bias check).",
                                        fix=LIST_FIX, group="previews")

    # --- DreamBooth-style prior preservation
    with_prior_preservation: bool = opt(False, "Train on class pictures alongside, so the model keeps its idea of "
                                        "the class.", group="prior")
    class_prompt: str = opt("", "A prompt for the general class, e.g. 'portrait of a person'.", group="prior")
    class_data_dir: str = opt("", "Your class pictures; empty = generate them once with the base model.",
                              group="prior")
    num_class_images: int = opt(50, "How many class pictures for prior preservation (50–200 usual).", lo=1,
                                hi=10_000, fix="use 50–200 (about 100 × the instance images is common)", group="prior")
    class_sampling_steps: int = opt(25, "Sampling steps per generated class picture.", lo=1, hi=150, fix="use 25",
                                    group="prior")
    class_seed: int = opt(0, "Seed of the generated class pictures.", lo=0, hi=SEED_MAX, fix="use any whole number",
                          group="prior")
    prior_loss_weight: float = opt(1.0, "Weight of the class pictures' loss.", lo=0.0, hi=10.0, fix="use 1.0",
                                   group="prior")

    # --- experiment logging
    report_to: list[str] = opt(["tensorboard"], "Experiment trackers: tensorboard, wandb; [] = none.",
                               choices=REPORTERS, fix='use ["tensorboard"]', group="run")

    # --- run control
    checkpointing_steps: int = opt(500, "Steps between resumable checkpoints (0 = off).", lo=0, hi=1_000_000,
                                   fix="use 0 (off) or about a quarter of max_train_steps", group="run")
    checkpoints_total_limit: int = opt(3, "How many checkpoints to keep.", lo=1, hi=1000,
                                       fix="keep the last 2–5 checkpoints", group="run")
    resume_from: str = opt("", "A checkpoint folder, or 'latest' (the newest of this job's name).", group="run")
    num_threads: int = opt(0, "CPU threads for torch; 0 = the machine's default. The job record keeps the number "
                           "used, so a rerun (plain or through accelerate launch) sums in the same order.", lo=0,
                           hi=1024, fix="use 0 (the machine's default) or the number of CPU cores", group="run")
    test_mode: bool = opt(False, "Allow 32–255 px for pipeline smoke tests with tiny models.", group="run")

    def __post_init__(self) -> None:
        # JSON and widgets give 4.0 for 4 (and 1 for 1.0): convert exact values to the field's type here, once,
        # so every later use sees the declared type; anything inexact is left for problems() to report.
        for f in fields(self):
            v = getattr(self, f.name)
            if isinstance(v, bool):
                continue
            if f.type == "int" and isinstance(v, float) and math.isfinite(v) and v.is_integer():
                setattr(self, f.name, int(v))
            elif f.type == "float" and isinstance(v, int):
                setattr(self, f.name, float(v))

    # ------------------------------------------------------------------ validation
    def problems(self) -> list[Problem]:
        """Every problem of this config, field checks first (from the definitions), then cross-field rules."""
        found = [p for f in fields(self) if (p := _check_field(f, getattr(self, f.name), self.test_mode))]
        return found + self._cross_field_problems()

    def _cross_field_problems(self) -> list[Problem]:
        p: list[Problem] = []
        lo = _bounds("resolution", self.test_mode)[0]
        if isinstance(self.resolution, int) and self.resolution % 8:
            p.append(Problem("resolution", self.resolution, "a multiple of 8 (the VAE downsamples by 8)",
                             f"use {max(lo, self.resolution // 64 * 64)} or {self.resolution // 64 * 64 + 64}"))
        if isinstance(self.lr_warmup_steps, int) and isinstance(self.max_train_steps, int) \
                and self.lr_warmup_steps >= self.max_train_steps > 0:
            p.append(Problem("lr_warmup_steps", self.lr_warmup_steps, f"fewer than max_train_steps "
                             f"({self.max_train_steps})", f"use at most {max(0, self.max_train_steps // 10)}"))
        if self.with_prior_preservation is True and not (isinstance(self.class_prompt, str) and self.class_prompt.strip()):
            p.append(Problem("class_prompt", self.class_prompt, "a prompt when with_prior_preservation is on",
                             "describe the class, e.g. 'portrait of a person', or turn prior preservation off"))
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
                                       "known fields are listed by `lora-studio presets`") for k in unknown])
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
        return cls.from_json(read_job_text(path))

    def replace(self, **changes: Any) -> "TrainConfig":
        return dataclasses.replace(self, **changes)


# ---------------------------------------------------------------------- checks derived from the definitions


def _bounds(name: str, test_mode: bool = False) -> tuple[float, float]:
    s = spec(name)
    lo = TEST_RESOLUTION_MIN if (name == "resolution" and test_mode) else s.lo
    return lo, s.hi


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _check_field(f: dataclasses.Field, v: Any, test_mode: bool) -> Problem | None:
    """The problem with one field's value, from its type and FieldSpec (None if it is fine)."""
    s: FieldSpec = f.metadata["spec"]
    fix = s.fix
    if f.type in ("int", "float"):
        lo, hi = _bounds(f.name, test_mode)
        integer = f.type == "int"
        ok = _is_number(v) and (not integer or float(v).is_integer()) and lo <= v <= hi
        allowed = f"{'an integer' if integer else 'a number'} from {lo:g} to {hi:g}"
    elif f.type == "bool":
        ok, allowed, fix = isinstance(v, bool), "true or false", "write true or false without quotes"
    elif f.type == "str":
        ok = isinstance(v, str) and (not s.nonempty or v.strip() != "") and (s.choices is None or v in s.choices)
        allowed = ", ".join(s.choices) if s.choices else ("a non-empty name" if s.nonempty else "text")
        fix = fix or "put the value in quotes"
    else:  # list[str]
        ok = isinstance(v, list) and all(isinstance(x, str) for x in v) and (not s.nonempty or len(v) > 0) \
            and (s.choices is None or all(x in s.choices for x in v))
        allowed = _list_allowed(s)
    return None if ok else Problem(f.name, v, allowed, fix)


def _list_allowed(s: FieldSpec) -> str:
    if not s.choices:
        return "a list of texts"
    return ("a non-empty list of " if s.nonempty else "a list of ") + ", ".join(s.choices) + \
        ("" if s.nonempty else " (or [] for none)")


# ---------------------------------------------------------------------- the definitions, for derived files


def spec(name: str) -> FieldSpec:
    return _FIELDS[name].metadata["spec"]


def field_type(name: str) -> str:
    return str(_FIELDS[name].type)


def field_default(name: str) -> Any:
    f = _FIELDS[name]
    return f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default


def field_names() -> list[str]:
    return [f.name for f in fields(TrainConfig)]


def field_table() -> dict[str, dict[str, Any]]:
    """Every field's definition as plain data (for web/presets.json and `lora-studio presets`)."""
    out = {}
    for name in field_names():
        s = spec(name)
        row = {"type": field_type(name), "default": field_default(name), "help": s.help, "group": s.group}
        if s.lo is not None:
            row.update(min=s.lo, max=s.hi)
        if s.choices is not None:
            row["choices"] = list(s.choices)
        out[name] = row
    return out


_FIELDS = {f.name: f for f in fields(TrainConfig)}


_BOMS = ((b"\xef\xbb\xbf", "utf-8-sig"), (b"\xff\xfe", "utf-16"), (b"\xfe\xff", "utf-16"))
MAX_JOB_BYTES = 16 * 2**20  # a job file or record is a few KB; anything this big is not one


def read_job_text(path: str | Path) -> str:
    """The text of a job file, with a clear error for what people actually pass by mistake.

    UTF-8 is the format; a byte-order mark (Windows editors, PowerShell's `>` writes UTF-16) is
    honoured rather than refused, since the content is still a valid job.
    """
    p = Path(path).expanduser()

    def bad(allowed: str, fix: str) -> ConfigError:
        return ConfigError([Problem("--job", str(path), allowed, fix)])

    if not p.exists():
        hint = f" (looked in {Path.cwd()})" if not p.is_absolute() else ""
        raise bad("an existing job JSON file", f"check the path{hint}; job records are in the jobs folder")
    if p.is_dir():
        raise bad("a file, not a folder", "name one .json file inside it")
    try:
        if p.stat().st_size > MAX_JOB_BYTES:
            raise bad(f"a JSON file under {MAX_JOB_BYTES // 2**20} MB", "name a job JSON or a job record")
        raw = p.read_bytes()
    except OSError as e:
        raise bad("a readable file", f"check its permissions ({e.strerror or e})") from None
    encoding = next((enc for bom, enc in _BOMS if raw.startswith(bom)), "utf-8")
    if encoding == "utf-8" and b"\x00" in raw[:4096]:
        raise bad("UTF-8 text", "it looks like UTF-16 without a byte-order mark: save it as UTF-8")
    try:
        return raw.decode(encoding)
    except UnicodeDecodeError as e:
        raise bad("UTF-8 text", f"save it as UTF-8 (byte {e.start} is not {encoding}); is it a JSON file at all?") \
            from None
