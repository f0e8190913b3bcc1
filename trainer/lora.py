"""LoRA adapters: inject with peft, read back, and name them the way every loader understands.

kohya naming is `lora_unet_<module path with _>` / `lora_te[1|2]_text_model_<…>` with
`.lora_down.weight` (peft's lora_A), `.lora_up.weight` (lora_B) and a scalar `.alpha`. ComfyUI
applies `alpha / rank` only when the `.alpha` tensor is present, so it is always written.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

ADAPTER = "default"


@dataclass(frozen=True)
class AdapterSpec:
    rank: int
    alpha: float
    target_modules: tuple[str, ...]
    dropout: float = 0.0

    def peft_config(self):
        from peft import LoraConfig

        return LoraConfig(r=self.rank, lora_alpha=self.alpha, lora_dropout=self.dropout,
                          target_modules=list(self.target_modules), init_lora_weights="gaussian")


def inject(model: torch.nn.Module, spec: AdapterSpec, fused: bool = True) -> list[torch.nn.Parameter]:
    """Add LoRA layers in place; returns the trainable parameters (everything else stays frozen).

    `fused`: linear layers become `trainer.fused_lora.FusedLoraLinear` (peft's own Linear with a one-node
    autograd forward) through peft's custom-module registration; `False` keeps peft's stock layers."""
    from peft import inject_adapter_in_model

    config = spec.peft_config()
    if fused:
        from .fused_lora import FusedLoraLinear

        config._register_custom_module({torch.nn.Linear: FusedLoraLinear})
    inject_adapter_in_model(config, model, adapter_name=ADAPTER)
    params = []
    for name, p in model.named_parameters():
        is_lora = ".lora_A." in name or ".lora_B." in name
        p.requires_grad_(is_lora)
        if is_lora:
            params.append(p)
    return params


def adapter_state_dict(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """peft-style keys without the adapter name: `<module>.lora_A.weight` / `.lora_B.weight`."""
    from peft import get_peft_model_state_dict

    return {k: v.detach() for k, v in get_peft_model_state_dict(model, adapter_name=ADAPTER).items()}


def load_adapter_state_dict(model: torch.nn.Module, state: dict[str, torch.Tensor]) -> None:
    from peft import set_peft_model_state_dict

    result = set_peft_model_state_dict(model, state, adapter_name=ADAPTER)
    unexpected = getattr(result, "unexpected_keys", []) or []
    if unexpected:
        raise ValueError(f"adapter weights do not fit the model: {unexpected[:3]}")


def _te_module_path(module: str) -> str:
    # transformers >= 5.6 dropped CLIPTextModel's `text_model.` level; kohya names always include it.
    return module if module.startswith("text_model.") else "text_model." + module


def to_kohya(prefix: str, state: dict[str, torch.Tensor], alpha: float, text_encoder: bool,
             dtype: torch.dtype) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        for peft_part, kohya_part in ((".lora_A.weight", ".lora_down.weight"), (".lora_B.weight", ".lora_up.weight")):
            if key.endswith(peft_part):
                module = key[: -len(peft_part)]
                if text_encoder:
                    module = _te_module_path(module)
                name = prefix + "_" + module.replace(".", "_")
                out[name + kohya_part] = value.to(dtype).contiguous()
                out[name + ".alpha"] = torch.tensor(float(alpha), dtype=dtype)
                break
        else:
            raise ValueError(f"unexpected adapter key {key}")
    return out


def text_encoder_prefixes(family: str) -> list[str]:
    return ["lora_te1", "lora_te2"] if family == "sdxl" else ["lora_te"]
