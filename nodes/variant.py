"""A job record back into the inputs of Load Dataset and Configure LoRA: the sidebar's "New variant" and
"Resume" put them into a graph. The inverse of configure.build_overrides: feeding these inputs to
Configure LoRA gives the record's config again (tests/test_studio_variant.py checks the round trip).
"""
from __future__ import annotations

import json
from pathlib import Path

from ..trainer.presets import CONFIGURE_WIDGETS, apply_preset, get_preset, widget_kind

# set by Train LoRA / Load Dataset / the checkpoint list, never by the user in `extra`
_FROM_ELSEWHERE = {"preset", "name", "base_model", "dataset", "trigger_token", "placeholder", "output_dir", "jobs_dir",
                   "cache_dir", "tokenizer_dir", "resume_from", "with_prior_preservation", "class_prompt",
                   *CONFIGURE_WIDGETS}


def configure_inputs(config: dict, ckpt_name: str) -> dict:
    """Configure LoRA's widget values that rebuild `config`, showing the preset's values where they hold."""
    preset = get_preset(config.get("preset") or "fotostudio")
    base = apply_preset(preset.key).to_dict()
    w: dict = {"ckpt_name": ckpt_name, "preset": preset.title, "name": config.get("name") or "my_lora"}
    prior = bool(config.get("with_prior_preservation"))
    for name in CONFIGURE_WIDGETS:
        kind, v = widget_kind(name), config.get(name, base.get(name))
        if kind in ("number", "choice"):
            w[name] = v
        elif kind == "switch":
            w[name] = "on" if v else "off"
        elif kind in ("auto", "always"):
            w[name] = v
        elif kind == "class_prompt":
            w[name] = (config.get("class_prompt") or "") if prior else ""
    extra = {k: v for k, v in sorted(config.items())
             if k not in _FROM_ELSEWHERE and k in base and base[k] != v}
    if not prior and config.get("class_prompt") != base.get("class_prompt"):
        extra["class_prompt"] = config.get("class_prompt")  # kept although off: the round trip is exact
    if prior != bool(base.get("with_prior_preservation")) and not (prior and w.get("class_prompt")):
        extra["with_prior_preservation"] = prior
    w["extra"] = json.dumps(extra, ensure_ascii=False) if extra else ""
    return w


def dataset_inputs(config: dict, input_dir: Path) -> dict:
    """Load Dataset's widget values: the dataset as a name inside the input folder (or the path as it was)."""
    path = Path(str(config.get("dataset") or ""))
    try:
        name = path.resolve().relative_to(Path(input_dir).resolve()).as_posix()
    except (ValueError, OSError):
        name = str(path)
    return {"dataset": name, "trigger_token": config.get("trigger_token") or "",
            "placeholder": config.get("placeholder") or "<my_token>"}


def ckpt_name_of(base_model: str, names: list[str], full_path) -> str:
    """The checkpoint list's entry for a full path (the record keeps the path; the widget wants the name)."""
    target = str(Path(base_model).resolve()) if base_model else ""
    for n in names:
        p = full_path(n)
        if p and str(Path(p).resolve()) == target:
            return n
    return Path(base_model).name if base_model else ""


def variant(record: dict, input_dir: Path, ckpt_names: list[str], full_path) -> dict:
    cfg = record.get("config") or {}
    return {"LoraStudio_LoadDataset": dataset_inputs(cfg, input_dir),
            "LoraStudio_ConfigureLoRA": configure_inputs(cfg, ckpt_name_of(cfg.get("base_model", ""), ckpt_names,
                                                                           full_path))}
