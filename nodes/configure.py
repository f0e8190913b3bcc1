"""ConfigureLoRA: base checkpoint + one of the guide's presets + overrides → a validated config and
the exact headless command that reproduces the job."""
from __future__ import annotations

import json

from ..trainer import ConfigError, Problem, apply_preset
from ..trainer.commands import train_command
from ..trainer.config import field_default, field_type, spec
from ..trainer.presets import CONFIGURE_WIDGETS, KEEP, PRESETS, get_preset, overrides_from_widgets, widget_kind
from .comfy_bridge import CATEGORY, Config, checkpoint_names, checkpoint_path, confined, io, loras_dir

PRESET_TITLES = [p.title for p in PRESETS.values()]
TIP_KEEP = "0 keeps the preset's value."
# Widget details that are about the widget, not the field: step sizes and rounding of the number boxes.
NUMBER_OPTIONS = {"resolution": {"step": 8}, "learning_rate": {"step": 0.00001, "round": 1e-7}, "alpha": {"step": 1.0}}


def _auto_precision() -> str:
    import torch

    if not torch.cuda.is_available():
        return "no"
    return "bf16" if torch.cuda.is_bf16_supported() else "fp16"


def build_overrides(kw: dict) -> dict:
    """Widget values → config overrides (trainer.presets.CONFIGURE_WIDGETS), then name and the extra JSON."""
    o = overrides_from_widgets(kw, _auto_precision() if kw.get("mixed_precision", "auto") == "auto" else "no")
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
    return apply_preset(get_preset(kw["preset"]).key, confined(overrides))  # refused here already at queue time


def headless_command(cfg, dataset: str = "<dataset folder>") -> str:
    """The guide's copyable line: the same job from a terminal (one GPU or several, via accelerate)."""
    preset = get_preset(cfg.preset)
    base = apply_preset(preset.key).to_dict()
    skip = {"preset", "base_model", "dataset", "output_dir", "name"}
    sets = [f"{k}={json.dumps(v) if not isinstance(v, str) else v}" for k, v in cfg.to_dict().items()
            if k not in skip and base.get(k) != v]
    parts = ["--preset", preset.key, "--name", cfg.name, "--base-model", cfg.base_model, "--dataset", dataset,
             "--output-dir", cfg.output_dir]
    for s in sets:
        parts += ["--set", s]
    return train_command(parts)


def override_input(name: str) -> io.Input:
    """One override widget, from the config field's definition (type, range, choices, help)."""
    s, kind = spec(name), widget_kind(name)
    keep = f"{s.help} 'preset' keeps the preset's value."
    if kind == "number" and field_type(name) == "int":
        return io.Int.Input(name, default=0, min=0, max=int(s.hi), optional=True, tooltip=f"{s.help} {TIP_KEEP}",
                            **NUMBER_OPTIONS.get(name, {}))
    if kind == "number":
        return io.Float.Input(name, default=0.0, min=0.0, max=float(s.hi), optional=True,
                              tooltip=f"{s.help} {TIP_KEEP}", **NUMBER_OPTIONS.get(name, {}))
    if kind == "switch":
        return io.Combo.Input(name, options=[KEEP, "on", "off"], default=KEEP, optional=True, tooltip=keep)
    if kind == "choice":
        return io.Combo.Input(name, options=[KEEP, *s.choices], default=KEEP, optional=True, tooltip=keep)
    if kind == "auto":
        return io.Combo.Input(name, options=["auto", *s.choices], default="auto", optional=True,
                              tooltip=f"{s.help} auto picks that for this machine.")
    if kind == "always":
        # no "control after generate" widget: a seed that changed itself after each run would break
        # "same seed + same settings + same data = the same LoRA"
        return io.Int.Input(name, default=field_default(name), min=int(s.lo), max=int(s.hi), optional=True,
                            control_after_generate=False, tooltip=s.help)
    return io.String.Input(name, default="", optional=True, tooltip=f"DreamBooth-style prior preservation: "
                           f"{s.help[0].lower()}{s.help[1:]} When set, class pictures are rendered once by the base "
                           "model (or taken from class_data_dir in extra) and trained alongside, so the model keeps "
                           "its idea of the class. Empty = off.")


class ConfigureLoRA(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="LoraStudio_ConfigureLoRA",
            display_name="Configure LoRA (LoRA Studio)",
            category=CATEGORY,
            description="Chooses the base model and one of the three presets of the AI4ArtsEd guide, with every "
                        "value overridable. 0 or 'preset' keeps the preset's value. Checked on the server before the "
                        "run; also gives the exact command that runs the same job headless.",
            inputs=[
                io.Combo.Input("ckpt_name", options=checkpoint_names(), tooltip="The base model to adapt (SD 1.5, "
                               "SD 2.x or SDXL), from models/checkpoints. Use the same model later with the LoRA."),
                io.Combo.Input("preset", options=PRESET_TITLES, default=PRESET_TITLES[0], tooltip=" | ".join(
                    f"{p.title}: {p.suited_for_en} — {p.focus_en}" for p in PRESETS.values())),
                io.String.Input("name", default=field_default("name"), tooltip=spec("name").help),
                *(override_input(name) for name in CONFIGURE_WIDGETS),
                io.String.Input("extra", default="", multiline=True, optional=True, tooltip="Any other field as "
                                "JSON, e.g. {\"noise_offset\": 0.05, \"snr_gamma\": 5}. `python -m trainer presets` "
                                "lists every field."),
            ],
            outputs=[
                Config.Output("config_out", display_name="config", tooltip="The validated training configuration."),
                io.String.Output("command", display_name="command", tooltip="The same job as a terminal command (accelerate launch), to copy."),
            ],
        )

    @classmethod
    def validate_inputs(cls, **kw) -> bool | str:
        # With **kw ComfyUI skips its own combo/range checks for every input, so do them here first.
        spec_ = cls.INPUT_TYPES()
        options = {k: o["options"] for section in ("required", "optional")
                   for k, (_, o) in spec_.get(section, {}).items() if "options" in o}
        for key, value in kw.items():
            if key in options and value not in options[key]:
                shown = ", ".join(map(str, options[key][:8])) or "(none: the list is empty)"
                return f"{key} = {value!r} is not one of: {shown}. Fix: pick a value from the list (press R to refresh)."
        if "ckpt_name" not in kw or "preset" not in kw:
            return True  # linked inputs are checked when the node runs
        try:
            make_config(kw, resolve_checkpoint=False)
        except ConfigError as e:
            return str(e)
        return True

    @classmethod
    def execute(cls, **kw) -> io.NodeOutput:
        cfg = make_config(kw)
        command = headless_command(cfg)
        return io.NodeOutput(cfg.to_dict(), command, ui={"command": [command]})  # ui: the copy-command panel
