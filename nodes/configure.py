"""ConfigureLoRA: base checkpoint + one of the guide's presets + overrides → a validated config and
the exact headless command that reproduces the job."""
from __future__ import annotations

import json

from ..trainer import ConfigError, LoraStudioError, Problem, apply_preset
from ..trainer.commands import config_command
from ..trainer.config import field_default, field_type, spec
from ..trainer.presets import (CONFIGURE_WIDGETS, DEFAULT_PRESET, KEEP, PRESETS, get_preset, overrides_from_widgets,
                               preset_widgets, widget_kind)
from .comfy_bridge import CATEGORY, Config, checkpoint_names, checkpoint_path, confined, io, loras_dir

PRESET_TITLES = [p.title for p in PRESETS.values()]
PICK_CHECKPOINT = ("ckpt_name is empty: pick your base model (an SD 1.5, SD 2.x or SDXL checkpoint from "
                   "models/checkpoints) in Configure LoRA; put one there and press R if the list is empty.")
DEFAULTS = preset_widgets(DEFAULT_PRESET)  # the widgets show the default preset's values
TIP_PRESET = "Shows the preset's value; picking another preset sets it. 0 (older workflows) = the preset's value."
TIP_KEEP = "Shows the preset's value; picking another preset sets it. 'preset' = the preset's value."
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


def live_command(widgets: dict, dataset: dict | None = None) -> dict:
    """Configure LoRA's command while the user edits (POST /lora_studio/command): the config Train LoRA would run
    with these widgets and Load Dataset's values, and its line from trainer.commands.config_command, the one
    builder of that command. {"command", "config", "overrides": {field: {value, preset}}, "error"}."""
    from ..trainer.studio.jobs import settings_differing_from_preset
    from .dataset import confine_dataset
    from .train import train_config

    if not str(widgets.get("ckpt_name") or "").strip():
        return {"command": "", "config": None, "overrides": {}, "error": PICK_CHECKPOINT}
    try:
        cfg = make_config(widgets).to_dict()
        data = dataset or {}
        if str(data.get("dataset") or "").strip():
            cfg = train_config({"root": str(confine_dataset(str(data["dataset"]))),
                                "trigger_token": str(data.get("trigger_token") or ""),
                                "placeholder": str(data.get("placeholder") or field_default("placeholder"))},
                               cfg, "auto").to_dict()
    except LoraStudioError as e:  # bad values, a missing checkpoint, a dataset outside the input folder
        return {"command": "", "config": None, "overrides": {}, "error": str(e)}
    return {"command": config_command(cfg), "config": cfg, "overrides": settings_differing_from_preset(cfg),
            "error": None}


def override_input(name: str) -> io.Input:
    """One override widget, from the config field's definition (type, range, choices, help)."""
    s, kind = spec(name), widget_kind(name)
    keep = f"{s.help} {TIP_KEEP}"
    # min 0 and the "preset" option stay: older workflows saved them for "keep the preset's value"
    if kind == "number" and field_type(name) == "int":
        return io.Int.Input(name, default=DEFAULTS[name], min=0, max=int(s.hi), optional=True,
                            tooltip=f"{s.help} {TIP_PRESET}", **NUMBER_OPTIONS.get(name, {}))
    if kind == "number":
        return io.Float.Input(name, default=float(DEFAULTS[name]), min=0.0, max=float(s.hi), optional=True,
                              tooltip=f"{s.help} {TIP_PRESET}", **NUMBER_OPTIONS.get(name, {}))
    if kind == "switch":
        return io.Combo.Input(name, options=[KEEP, "on", "off"], default=DEFAULTS[name], optional=True, tooltip=keep)
    if kind == "choice":
        return io.Combo.Input(name, options=[KEEP, *s.choices], default=DEFAULTS[name], optional=True, tooltip=keep)
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
                        "value overridable: the widgets show the chosen preset's values, a changed one is marked as an override. "
                        "Checked on the server before the run; the panel shows the exact command that runs the same "
                        "job headless, updated while you edit.",
            inputs=[
                io.Combo.Input("ckpt_name", options=checkpoint_names(), tooltip="The base model to adapt (SD 1.5, "
                               "SD 2.x or SDXL), from models/checkpoints. Use the same model later with the LoRA."),
                io.Combo.Input("preset", options=PRESET_TITLES, default=PRESETS[DEFAULT_PRESET].title, tooltip=" | ".join(
                    f"{p.title}: {p.suited_for_en} — {p.focus_en}" for p in PRESETS.values())),
                io.String.Input("name", default=field_default("name"), tooltip=spec("name").help),
                *(override_input(name) for name in CONFIGURE_WIDGETS),
                io.String.Input("extra", default="", multiline=True, optional=True, tooltip="Any other field as "
                                "JSON, e.g. {\"noise_offset\": 0.05, \"snr_gamma\": 5}. `python -m trainer presets` "
                                "lists every field."),
            ],
            outputs=[
                Config.Output("config_out", display_name="config", tooltip="The validated training configuration."),
                io.String.Output("command", display_name="command", tooltip="These settings as a terminal command (python -m trainer train …, or lora-studio when pip-installed). The panel's command adds Load Dataset's dataset and trigger token; after a run it is the job's own --job command."),
            ],
        )

    @classmethod
    def validate_inputs(cls, **kw) -> bool | str:
        # With **kw ComfyUI skips its own combo/range checks for every input, so do them here first.
        spec_ = cls.INPUT_TYPES()
        options = {k: o["options"] for section in ("required", "optional")
                   for k, (_, o) in spec_.get(section, {}).items() if "options" in o}
        if kw.get("ckpt_name") == "":  # the templates leave it empty: a named file would be "missing" on most servers
            return PICK_CHECKPOINT
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
        cfg = make_config(kw).to_dict()
        # The panel's command is the live one (with Load Dataset's dataset and trigger, POST /lora_studio/command)
        # and after a run the job's own --job line; this output has no dataset: Train LoRA adds it.
        return io.NodeOutput(cfg, config_command(cfg))
