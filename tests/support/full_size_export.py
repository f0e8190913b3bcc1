"""Our exporter run on full-size SD1.5 / SD2 / SDXL architectures without their weights.

The models are built on torch's meta device from the shipped real configs, peft injects the
adapters as in training, and the export turns peft's state dict into the file's tensors: the same
code path as a real run, at the real module count, in seconds and without memory.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

CONFIGS = Path(__file__).resolve().parents[2] / "trainer" / "models" / "configs"
TEXT_ENCODERS = {"sd15": ["text_encoder"], "sd2": ["text_encoder"], "sdxl": ["text_encoder", "text_encoder_2"]}


def load_config(family: str, part: str) -> dict:
    return json.loads((CONFIGS / family / part / "config.json").read_text())


def export_full_size(family: str, unet_targets, te_targets, rank: int = 4,
                     configs: str | None = None) -> tuple[dict[str, torch.Tensor], dict]:
    """(file tensors on the meta device, the UNet config) for this family and these targets.

    `configs`: another shipped config folder of the same family (e.g. "tiny-sdxl")."""
    family_dir = configs or family
    from diffusers import UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from trainer.export import kohya_state_dict
    from trainer.lora import AdapterSpec, adapter_state_dict, inject

    unet_config = load_config(family_dir, "unet")
    with torch.device("meta"):
        unet = UNet2DConditionModel.from_config(unet_config)
        encoders = [CLIPTextModel(CLIPTextConfig(**load_config(family_dir, p))) for p in TEXT_ENCODERS[family]]
    inject(unet, AdapterSpec(rank, float(rank), tuple(unet_targets)))
    te_states = []
    if te_targets:
        for te in encoders:
            inject(te, AdapterSpec(rank, float(rank), tuple(te_targets)))
            te_states.append(adapter_state_dict(te))
    tensors = kohya_state_dict(family, adapter_state_dict(unet), te_states, float(rank), torch.float16,
                               unet_config=unet.config)
    return tensors, unet_config


def materialise(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Real zero tensors of the same shapes (alpha keeps its value): what a loader can read."""
    return {k: (torch.tensor(4.0) if k.endswith(".alpha") else torch.zeros(v.shape, dtype=torch.float16))
            for k, v in tensors.items()}
