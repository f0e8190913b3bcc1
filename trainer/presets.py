"""The guide's three presets (AI4ArtsEd "LoRA Studio" table), with their intent kept.

| Preset | for | focus |
| Fotostudio – Schnellstart | 10–30 portrait/object images, quick tests | short run, 512 px, UNet only |
| Atelier – Detailtreue | 30–75 stylistically similar pictures | more steps, finer learning rate, higher rank |
| Galerie – Feinabstimmung | 75–150 curated artworks | 640 px, text-encoder training, >= 16 GB VRAM |

Every field stays overridable: `apply_preset(key, overrides)` returns a validated config.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .config import TrainConfig
from .errors import ConfigError, Problem


@dataclass(frozen=True)
class Preset:
    key: str
    title: str  # as the guide writes it
    suited_for: str
    focus: str
    min_images: int
    max_images: int
    min_vram_gb: int
    values: dict[str, Any]


PRESETS: dict[str, Preset] = {
    p.key: p
    for p in (
        Preset(
            key="fotostudio",
            title="Fotostudio – Schnellstart",
            suited_for="10–30 Portrait- oder Objektmotive, schnelle Tests",
            focus="Kurzes Training mit 512 px Auflösung und UNet-Feintuning",
            min_images=10, max_images=30, min_vram_gb=8,
            values=dict(resolution=512, rank=8, alpha=8.0, learning_rate=1e-4, lr_scheduler="cosine",
                        lr_warmup_steps=50, max_train_steps=800, train_batch_size=1,
                        gradient_accumulation_steps=2, train_text_encoder=False, snr_gamma=5.0,
                        checkpointing_steps=200),
        ),
        Preset(
            key="atelier",
            title="Atelier – Detailtreue",
            suited_for="30–75 stilistisch ähnliche Aufnahmen",
            focus="Mehr Schritte, feinere Lernrate, höhere LoRA-Ranks",
            min_images=30, max_images=75, min_vram_gb=12,
            values=dict(resolution=512, rank=32, alpha=32.0, learning_rate=5e-5, lr_scheduler="cosine",
                        lr_warmup_steps=100, max_train_steps=2500, train_batch_size=1,
                        gradient_accumulation_steps=4, train_text_encoder=False, snr_gamma=5.0,
                        unet_target_modules=["to_q", "to_k", "to_v", "to_out.0", "proj_in", "proj_out"],
                        checkpointing_steps=500),
        ),
        Preset(
            key="galerie",
            title="Galerie – Feinabstimmung",
            suited_for="75–150 kuratierte Kunstwerke",
            focus="640 px Auflösung, Text-Encoder-Training, benötigt ≥ 16 GB VRAM",
            min_images=75, max_images=150, min_vram_gb=16,
            values=dict(resolution=640, rank=32, alpha=16.0, learning_rate=5e-5, text_encoder_lr=1e-5,
                        lr_scheduler="cosine_with_restarts", lr_num_cycles=2, lr_warmup_steps=150,
                        max_train_steps=4000, train_batch_size=2, gradient_accumulation_steps=2,
                        train_text_encoder=True, snr_gamma=5.0, gradient_checkpointing=True,
                        checkpointing_steps=500),
        ),
    )
}


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
