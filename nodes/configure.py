"""ConfigureLoRA: base checkpoint + one of the guide's presets + overrides → a validated config and
the exact headless command that reproduces the job."""
from __future__ import annotations

import json
import shlex
from pathlib import Path

from ..trainer import ConfigError, Problem, apply_preset
from ..trainer.config import SCHEDULERS
from ..trainer.presets import PRESETS, get_preset
from .comfy_bridge import CATEGORY, CONFIG_TYPE, checkpoint_names, checkpoint_path, loras_dir

PACK_DIR = Path(__file__).resolve().parents[1]
PRESET_TITLES = [p.title for p in PRESETS.values()]
KEEP = "preset"  # combo value meaning "use the preset's value"


def _auto_precision() -> str:
    import torch

    if not torch.cuda.is_available():
        return "no"
    return "bf16" if torch.cuda.is_bf16_supported() else "fp16"


def build_overrides(kw: dict) -> dict:
    """Widget values → config overrides. 0 / 'preset' means: keep the preset's value."""
    o: dict = {}
    for key in ("resolution", "max_train_steps", "rank", "train_batch_size", "gradient_accumulation_steps"):
        if kw.get(key):
            o[key] = int(kw[key])
    for key in ("learning_rate", "alpha"):
        if kw.get(key):
            o[key] = float(kw[key])
    for key in ("train_text_encoder", "gradient_checkpointing"):
        if kw.get(key, KEEP) != KEEP:
            o[key] = kw[key] == "on"
    if kw.get("lr_scheduler", KEEP) != KEEP:
        o["lr_scheduler"] = kw["lr_scheduler"]
    mp = kw.get("mixed_precision", "auto")
    o["mixed_precision"] = _auto_precision() if mp == "auto" else mp
    if "seed" in kw:
        o["seed"] = int(kw["seed"])
    if (kw.get("class_prompt") or "").strip():
        o.update(with_prior_preservation=True, class_prompt=kw["class_prompt"].strip())
    if kw.get("num_class_images"):
        o["num_class_images"] = int(kw["num_class_images"])
    if kw.get("name"):
        o["name"] = kw["name"]
    extra = (kw.get("extra") or "").strip()
    if extra:
        try:
            data = json.loads(extra)
        except json.JSONDecodeError as e:
            raise ConfigError([Problem("extra", extra[:60], "a JSON object such as {\"noise_offset\": 0.05}",
                                       f"fix the JSON syntax ({e.msg} at position {e.pos})")]) from None
        if not isinstance(data, dict):
            raise ConfigError([Problem("extra", extra[:60], "a JSON object", "wrap the fields in { }")])
        o.update(data)
    return o


def make_config(kw: dict, resolve_checkpoint: bool = True):
    overrides = build_overrides(kw)
    overrides["base_model"] = checkpoint_path(kw["ckpt_name"]) if resolve_checkpoint else kw["ckpt_name"]
    overrides.setdefault("output_dir", str(loras_dir()))
    return apply_preset(get_preset(kw["preset"]).key, overrides)


def headless_command(cfg, dataset: str = "<dataset folder>") -> str:
    """The guide's copyable line: the same job from a terminal (one GPU or several, via accelerate)."""
    preset = get_preset(cfg.preset)
    base = apply_preset(preset.key).to_dict()
    skip = {"preset", "base_model", "dataset", "output_dir", "name"}
    sets = [f"{k}={json.dumps(v) if not isinstance(v, str) else v}" for k, v in cfg.to_dict().items()
            if k not in skip and base.get(k) != v]
    parts = ["accelerate", "launch", "-m", "trainer", "train", "--preset", preset.key, "--name", cfg.name,
             "--base-model", cfg.base_model, "--dataset", dataset, "--output-dir", cfg.output_dir]
    for s in sets:
        parts += ["--set", s]
    return f"cd {shlex.quote(str(PACK_DIR))} && " + " ".join(shlex.quote(p) for p in parts)


class ConfigureLoRA:
    DESCRIPTION = ("Chooses the base model and one of the three presets of the AI4ArtsEd guide, with every value "
                   "overridable. 0 or 'preset' keeps the preset's value. Checked on the server before the run; "
                   "also gives the exact command that runs the same job headless.")
    CATEGORY = CATEGORY
    RETURN_TYPES = (CONFIG_TYPE, "STRING")
    RETURN_NAMES = ("config", "command")
    OUTPUT_TOOLTIPS = ("The validated training configuration.",
                       "The same job as a terminal command (accelerate launch), to copy.")
    FUNCTION = "configure"

    @classmethod
    def INPUT_TYPES(cls):
        tip = "0 keeps the preset's value."
        return {
            "required": {
                "ckpt_name": (checkpoint_names(), {"tooltip": "The base model to adapt (SD 1.5, SD 2.x or SDXL), from "
                                                   "models/checkpoints. Use the same model later with the LoRA."}),
                "preset": (PRESET_TITLES, {"default": PRESET_TITLES[0], "tooltip": " | ".join(
                    f"{p.title}: {p.suited_for} — {p.focus}" for p in PRESETS.values())}),
                "name": ("STRING", {"default": "my_lora", "tooltip": "File name of the LoRA in models/loras. An "
                                    "existing file is never overwritten: a number is added."}),
            },
            "optional": {
                "resolution": ("INT", {"default": 0, "min": 0, "max": 1536, "step": 8, "tooltip":
                                       "Training size in pixels (256–1536; 512 for SD 1.5, 1024 for SDXL). " + tip}),
                "max_train_steps": ("INT", {"default": 0, "min": 0, "max": 1_000_000, "tooltip":
                                            "How many optimizer steps to train. " + tip}),
                "learning_rate": ("FLOAT", {"default": 0.0, "min": 0.0, "max": 0.01, "step": 0.00001, "round": 1e-7,
                                            "tooltip": "Step size (≥ 1e-6; 1e-4 is usual). " + tip}),
                "rank": ("INT", {"default": 0, "min": 0, "max": 256, "tooltip":
                                 "LoRA rank: capacity and file size (4–32 typical). " + tip}),
                "alpha": ("FLOAT", {"default": 0.0, "min": 0.0, "max": 1024.0, "step": 1.0, "tooltip":
                                    "LoRA alpha; strength scales with alpha/rank. " + tip}),
                "train_text_encoder": ([KEEP, "on", "off"], {"default": KEEP, "tooltip":
                                       "Also adapt the text encoder(s): learns words better, needs more memory."}),
                "lr_scheduler": ([KEEP, *SCHEDULERS], {"default": KEEP, "tooltip":
                                 "How the learning rate changes over the run (with warmup)."}),
                "train_batch_size": ("INT", {"default": 0, "min": 0, "max": 64, "tooltip":
                                             "Images per step per GPU. " + tip}),
                "gradient_accumulation_steps": ("INT", {"default": 0, "min": 0, "max": 64, "tooltip":
                                                        "Steps whose gradients are summed before an update. " + tip}),
                "mixed_precision": (["auto", "no", "fp16", "bf16"], {"default": "auto", "tooltip":
                                    "auto: bf16 on GPUs that have it, else fp16 on a GPU, 'no' on the CPU."}),
                "gradient_checkpointing": ([KEEP, "on", "off"], {"default": KEEP, "tooltip":
                                           "Saves GPU memory for about 30 % more time per step."}),
                # no "control after generate" widget: a seed that changed itself after each run would break
                # "same seed + same settings + same data = the same LoRA"
                "seed": ("INT", {"default": 42, "min": 0, "max": 2**32 - 1, "control_after_generate": False, "tooltip":
                                 "Same seed + same settings + same data = the same LoRA."}),
                "class_prompt": ("STRING", {"default": "", "tooltip": "DreamBooth-style prior preservation: a prompt "
                                 "for the general class, e.g. 'portrait of a person'. When set, class pictures are "
                                 "rendered once by the base model (or taken from class_data_dir in extra) and "
                                 "trained alongside, so the model keeps its idea of the class. Empty = off."}),
                "num_class_images": ("INT", {"default": 0, "min": 0, "max": 10000, "tooltip":
                                     "How many class pictures for prior preservation (50–200 usual). " + tip}),
                "extra": ("STRING", {"default": "", "multiline": True, "tooltip":
                                     "Any other field as JSON, e.g. {\"noise_offset\": 0.05, \"snr_gamma\": 5}. "
                                     "`python -m trainer presets` lists every field."}),
            },
        }

    @classmethod
    def VALIDATE_INPUTS(cls, **kw):
        # With **kw ComfyUI skips its own combo/range checks for every input, so do them here first.
        spec = {**cls.INPUT_TYPES()["required"], **cls.INPUT_TYPES()["optional"]}
        for key, value in kw.items():
            if key in spec and isinstance(spec[key][0], list) and value not in spec[key][0]:
                shown = ", ".join(map(str, spec[key][0][:8])) or "(none: the list is empty)"
                return f"{key} = {value!r} is not one of: {shown}. Fix: pick a value from the list (press R to refresh)."
        if "ckpt_name" not in kw or "preset" not in kw:
            return True  # linked inputs are checked when the node runs
        try:
            make_config(kw, resolve_checkpoint=False)
        except ConfigError as e:
            return str(e)
        return True

    def configure(self, **kw):
        cfg = make_config(kw)
        command = headless_command(cfg)
        return {"ui": {"command": [command]}, "result": (cfg.to_dict(), command)}  # ui: the copy-command panel
