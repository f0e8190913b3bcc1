"""How other tools read our LoRA files: kohya's SDXL module names, and target sets they would ignore.

kohya's SDXL networks live on the Stability (SGM) UNet, so its SDXL files name UNet modules by that
tree (`lora_unet_input_blocks_4_1_transformer_blocks_0_attn1_to_q`), and its merge script and
`--network_weights` only match those names. ComfyUI, A1111/Forge, InvokeAI and diffusers read them
too. kohya's SD1.x/2.x networks use its own copy of diffusers' UNet layout, so those files keep
diffusers module names (`lora_unet_down_blocks_0_attentions_0_…`): nothing to convert there.
"""
from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

_BLOCK_ATTENTION = re.compile(r"^(down_blocks|up_blocks)\.(\d+)\.attentions\.(\d+)\.(.+)$")
_MID_ATTENTION = "mid_block.attentions.0."


def _layers_per_level(unet_config: Mapping[str, Any]) -> list[int]:
    levels = len(unet_config["down_block_types"])
    layers = unet_config["layers_per_block"]
    return [int(layers)] * levels if isinstance(layers, int) else [int(x) for x in layers]


def sgm_unet_module(module: str, unet_config: Mapping[str, Any]) -> str:
    """The SGM path of a diffusers UNet2DConditionModel module inside an attention block.

    SGM numbers the blocks flat: input block 0 is conv_in, then per level its resnets (each with
    its attention at `.1`) and a downsampler (not on the last level); output blocks run deepest
    level first, with one layer more per level than the way down and the upsampler inside the last.
    """
    if module.startswith(_MID_ATTENTION):
        return "middle_block.1." + module[len(_MID_ATTENTION):]
    m = _BLOCK_ATTENTION.match(module)
    if not m:  # the validator only admits attention-block targets; anything else must not be guessed
        raise ValueError(f"no SGM name for UNet module '{module}': only attention-block modules are mapped")
    kind, level, j, rest = m.group(1), int(m.group(2)), int(m.group(3)), m.group(4)
    layers = _layers_per_level(unet_config)
    if kind == "down_blocks":
        index = 1 + sum(layers[k] + 1 for k in range(level)) + j
        return f"input_blocks.{index}.1.{rest}"
    up_layers = [n + 1 for n in reversed(layers)]
    return f"output_blocks.{sum(up_layers[:level]) + j}.1.{rest}"


def sgm_state_dict(state: Mapping[str, Any], unet_config: Mapping[str, Any]) -> dict[str, Any]:
    """peft-keyed UNet adapter weights (`<module>.lora_A.weight`) with the modules renamed to SGM paths."""
    out = {}
    for key, value in state.items():
        module, _, part = key.partition(".lora_")
        out[f"{sgm_unet_module(module, unet_config)}.lora_{part}"] = value
    return out


# A1111's Lora extension applies a LoRA to open_clip's fused attention (SDXL's second text encoder)
# only when q, k, v and out projections are all present; with fewer it skips the layer silently.
_FUSED_ATTENTION = ("q_proj", "k_proj", "v_proj", "out_proj")
_TE_ATTENTION = set(_FUSED_ATTENTION)


def target_warnings(family: str, unet_targets: Iterable[str], train_text_encoder: bool,
                    text_encoder_targets: Iterable[str]) -> list[str]:
    """Target sets our loaders accept but another tool would silently ignore or misclassify."""
    unet_targets, te_targets = set(unet_targets), set(text_encoder_targets) if train_text_encoder else set()
    warnings = []
    partial = te_targets & _TE_ATTENTION
    if family == "sdxl" and partial and partial != _TE_ATTENTION:
        missing = ", ".join(t for t in _FUSED_ATTENTION if t not in partial)
        warnings.append(
            "AUTOMATIC1111's Lora extension applies the second SDXL text encoder's attention LoRA only when "
            "q_proj, k_proj, v_proj and out_proj are all trained (open_clip fuses them); with "
            f"text_encoder_target_modules {sorted(te_targets)} that part changes nothing there. "
            f"Fix: add {missing} to text_encoder_target_modules (ComfyUI and diffusers apply it either way).")
    # InvokeAI tells SD1/SD2/SDXL LoRAs apart by the width of a cross-attention key/value or a
    # text-encoder attention layer; a file with neither is filed as "Unknown" and cannot be used.
    if not ({"to_k", "to_v"} & unet_targets) and not (te_targets & _TE_ATTENTION):
        warnings.append(
            "InvokeAI recognises a LoRA's base model by its cross-attention to_k/to_v (or text-encoder attention) "
            f"layers; with unet_target_modules {sorted(unet_targets)} and no text-encoder attention it files "
            "this LoRA as 'Unknown' and will not apply it. Fix: add to_k and to_v to unet_target_modules.")
    return warnings


def diffusion_model_part(tensors: Mapping[str, Any]) -> dict[str, Any]:
    """The UNet keys of a file: what ComfyUI's `LORA_MODEL` carries (its Load LoRA Model node patches a MODEL only)."""
    return {k: v for k, v in tensors.items() if k.startswith("lora_unet_")}
