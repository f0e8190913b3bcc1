"""The guide's three presets (AI4ArtsEd "LoRA Studio" table), with their intent kept.

| Preset | for | focus |
| Fotostudio – Schnellstart | 10–30 portrait/object images, quick tests | short run, 512 px, UNet only |
| Atelier – Detailtreue | 30–75 stylistically similar pictures | more steps, finer learning rate, higher rank |
| Galerie – Feinabstimmung | 75–150 curated artworks | 640 px, text-encoder training, >= 16 GB VRAM |

Every field stays overridable: `apply_preset(key, overrides)` returns a validated config.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from .config import TrainConfig, field_table, field_type
from .errors import ConfigError, Problem


@dataclass(frozen=True)
class Preset:
    key: str
    title: str  # as the guide writes it (kept in German everywhere: it is the preset's name)
    suited_for: str  # the guide's German texts (German UI)
    focus: str
    min_images: int
    max_images: int
    min_vram_gb: int
    values: dict[str, Any]
    suited_for_en: str = ""  # the same in English (CLI, English UI)
    focus_en: str = ""


PRESETS: dict[str, Preset] = {
    p.key: p
    for p in (
        Preset(
            key="fotostudio",
            title="Fotostudio – Schnellstart",
            suited_for="10–30 Portrait- oder Objektmotive, schnelle Tests",
            focus="Kurzes Training mit 512 px Auflösung und UNet-Feintuning",
            suited_for_en="10–30 portrait or object pictures, quick tests",
            focus_en="Short run at 512 px, UNet fine-tuning only",
            min_images=10, max_images=30, min_vram_gb=8,
            values=dict(resolution=512, rank=8, alpha=8.0, learning_rate=1e-4, lr_scheduler="cosine",
                        lr_warmup_steps=50, max_train_steps=800, train_batch_size=1,
                        gradient_accumulation_steps=2, train_text_encoder=False, snr_gamma=5.0,
                        checkpointing_steps=200, preview_every=200),
        ),
        Preset(
            key="atelier",
            title="Atelier – Detailtreue",
            suited_for="30–75 stilistisch ähnliche Aufnahmen",
            focus="Mehr Schritte, feinere Lernrate, höhere LoRA-Ranks",
            suited_for_en="30–75 stylistically similar pictures",
            focus_en="More steps, a finer learning rate, higher LoRA rank",
            min_images=30, max_images=75, min_vram_gb=12,
            values=dict(resolution=512, rank=32, alpha=32.0, learning_rate=5e-5, lr_scheduler="cosine",
                        lr_warmup_steps=100, max_train_steps=2500, train_batch_size=1,
                        gradient_accumulation_steps=4, train_text_encoder=False, snr_gamma=5.0,
                        unet_target_modules=["to_q", "to_k", "to_v", "to_out.0", "proj_in", "proj_out"],
                        checkpointing_steps=500, preview_every=500),
        ),
        Preset(
            key="galerie",
            title="Galerie – Feinabstimmung",
            suited_for="75–150 kuratierte Kunstwerke",
            focus="640 px Auflösung, Text-Encoder-Training, benötigt ≥ 16 GB VRAM",
            suited_for_en="75–150 curated artworks",
            focus_en="640 px, text-encoder training, needs ≥ 16 GB VRAM",
            min_images=75, max_images=150, min_vram_gb=16,
            values=dict(resolution=640, rank=32, alpha=16.0, learning_rate=5e-5, text_encoder_lr=1e-5,
                        lr_scheduler="cosine_with_restarts", lr_num_cycles=2, lr_warmup_steps=150,
                        max_train_steps=4000, train_batch_size=2, gradient_accumulation_steps=2,
                        train_text_encoder=True, snr_gamma=5.0, gradient_checkpointing=True,
                        checkpointing_steps=500, preview_every=500),
        ),
    )
}


def preset_peaks(key: str) -> dict[str, str]:
    """Each family's estimated peak GPU memory for the preset's values (trainer.memory; says whether measured)."""
    from .memory import estimate_peak

    v = dict(TrainConfig().to_dict(), **get_preset(key).values)
    out = {}
    for family, res in (("sd15", v["resolution"]), ("sdxl", max(1024, v["resolution"]))):
        e = estimate_peak(family, res, v["train_batch_size"], "bf16", v["gradient_checkpointing"],
                          v["train_text_encoder"])
        out[family] = f"~{e.gb:.1f} GB at {res} px, bf16 ({e.basis})"
    return out


def get_preset(key: str) -> Preset:
    k = (key or "").strip().lower()
    for p in PRESETS.values():  # accept the guide's titles too ("Atelier – Detailtreue")
        if k in (p.key, p.title.lower(), p.title.split(" ")[0].lower()):
            return p
    raise ConfigError([Problem("preset", key, ", ".join(PRESETS), "pick one of the three presets")])


def apply_preset(key: str, overrides: dict[str, Any] | None = None) -> TrainConfig:
    """Preset values, then the caller's overrides field by field; validated."""
    preset = get_preset(key)
    data = TrainConfig().to_dict()
    data.update(preset.values)
    data["preset"] = preset.key
    data.update(overrides or {})
    return TrainConfig.from_dict(data).validate()


# The overrides the Configure LoRA node offers as widgets, in widget order (saved UI workflows store widget
# values by position: append, never reorder). The widgets show the chosen preset's values (preset_widgets);
# a value equal to the preset's is no override. How a widget maps to its field follows from the field's type:
#   "number"  the value; 0 keeps the preset's     "switch"  on / off (or "preset")
#   "choice"  one of the field's choices (or "preset")
# 0 and "preset" are what older workflows saved ("keep the preset's value"): still read that way, and the
# frontend shows the preset's value in their place.
# and three fields read differently: mixed_precision ("auto", also when absent = what the GPU has), seed
# (always set) and class_prompt (text turns prior preservation on).
# nodes/configure.py builds its widgets from this table and web/presets.json carries it to the panel's JS.
CONFIGURE_WIDGETS = ("resolution", "max_train_steps", "learning_rate", "rank", "alpha", "train_text_encoder",
                     "lr_scheduler", "train_batch_size", "gradient_accumulation_steps", "mixed_precision",
                     "gradient_checkpointing", "seed", "class_prompt", "num_class_images")
SPECIAL_WIDGETS = {"mixed_precision": "auto", "seed": "always", "class_prompt": "class_prompt"}
KEEP = "preset"  # combo value meaning "use the preset's value"


def widget_kind(name: str) -> str:
    if name in SPECIAL_WIDGETS:
        return SPECIAL_WIDGETS[name]
    return {"int": "number", "float": "number", "bool": "switch", "str": "choice"}[field_type(name)]


def _number(v: Any) -> Any:
    """A widget's number as a number; the API may send text ("1500"). Text that is no number is passed on
    unchanged, so that validation names the field and its range instead of a raw int() error."""
    if isinstance(v, str):
        try:
            return float(v) if any(c in v.lower() for c in ".en") else int(v)
        except ValueError:
            return v
    return v


def overrides_from_widgets(widgets: dict[str, Any], auto_precision: str = "no") -> dict[str, Any]:
    """Configure LoRA's widget values → config overrides (the panel's JS reads them the same way)."""
    o: dict[str, Any] = {}
    for name in CONFIGURE_WIDGETS:
        kind = widget_kind(name)
        v = widgets.get(name, "auto" if kind == "auto" else None)
        if v is None:
            continue
        if kind == "number" and _number(v):  # 0 (also "0" from the API) keeps the preset's value
            o[name] = _number(v)
        elif kind in ("switch", "choice") and v != KEEP:
            o[name] = (v == "on") if kind == "switch" else v
        elif kind == "auto":
            o[name] = auto_precision if v == "auto" else v
        elif kind == "always":
            o[name] = _number(v) if field_type(name) in ("int", "float") else v
        elif kind == "class_prompt" and str(v).strip():
            o.update(with_prior_preservation=True, class_prompt=str(v).strip())
    return o


def preset_widgets(key: str) -> dict[str, Any]:
    """Configure LoRA's widget values that show preset `key` as it is (the inverse of overrides_from_widgets):
    the node's defaults for the default preset, and what the frontend sets when the preset changes."""
    values = apply_preset(key).to_dict()
    out: dict[str, Any] = {}
    for name in CONFIGURE_WIDGETS:
        kind, v = widget_kind(name), values[name]
        if kind == "switch":
            out[name] = "on" if v else "off"
        elif kind == "auto":
            out[name] = "auto"  # what this machine's GPU has, decided at run time
        elif kind == "class_prompt":
            out[name] = v if values["with_prior_preservation"] else ""
        else:
            out[name] = v
    return out


DEFAULT_PRESET = next(iter(PRESETS))


def web_table() -> dict[str, Any]:
    """web/presets.json: the presets, the widget kinds, each preset's widget values and every field's
    definition, for the preset panel and the widgets' values when the preset changes."""
    return {"presets": {key: asdict(p) for key, p in PRESETS.items()},
            "widgets": {name: widget_kind(name) for name in CONFIGURE_WIDGETS},
            "widget_values": {key: preset_widgets(key) for key in PRESETS},
            "default_preset": DEFAULT_PRESET,
            "fields": field_table()}
