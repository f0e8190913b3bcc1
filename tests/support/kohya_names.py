"""The LoRA module names kohya's `networks/lora.py` creates, built from a model's architecture.

kohya walks the UNet for modules of class `Transformer2DModel` and the text encoders for
`CLIPAttention`/`CLIPMLP`, and names every Linear (or 1x1 Conv2d) inside as
`<prefix>.<module path>.<child path>` with dots turned into underscores. Which UNet tree it walks
depends on the family:

- SD1.x/SD2.x: kohya's `library/original_unet.py`, laid out like diffusers (`down_blocks.N.attentions.M`,
  `mid_block.attentions.0`, `up_blocks.N.attentions.M`);
- SDXL: `library/sdxl_original_unet.py`, the Stability (SGM) tree: flat `input_blocks`, `middle_block`,
  `output_blocks`, each entry a list of layers (resnet at 0, attention at 1, up/downsampler last).

This file rebuilds those trees from a diffusers config the way the two constructors do (block by
block, not by a formula), so the export's own index arithmetic is checked against an independent
construction.
"""
from __future__ import annotations

from typing import Any, Mapping

# Linear / 1x1-conv children of one Transformer2DModel (kohya's UNET_TARGET_REPLACE_MODULE) per block
_ATTENTION_CHILDREN = ("to_q", "to_k", "to_v", "to_out.0")
_TRANSFORMER_BLOCK_CHILDREN = tuple(f"{a}.{c}" for a in ("attn1", "attn2") for c in _ATTENTION_CHILDREN) + (
    "ff.net.0.proj", "ff.net.2")
# Linear children of CLIPAttention and CLIPMLP (TEXT_ENCODER_TARGET_REPLACE_MODULE)
_CLIP_LAYER_CHILDREN = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.out_proj",
                        "mlp.fc1", "mlp.fc2")


def _per_level(value, levels: int) -> list[int]:
    return [int(value)] * levels if isinstance(value, int) else [int(v) for v in value]


def transformer_children(depth: int) -> list[str]:
    children = ["proj_in", "proj_out"]
    for t in range(depth):
        children += [f"transformer_blocks.{t}.{c}" for c in _TRANSFORMER_BLOCK_CHILDREN]
    return children


def diffusers_layout(cfg: Mapping[str, Any]) -> list[tuple[str, int]]:
    """(Transformer2DModel path, depth) in kohya's SD1/SD2 UNet (diffusers' layout)."""
    down, up = list(cfg["down_block_types"]), list(cfg["up_block_types"])
    layers = _per_level(cfg["layers_per_block"], len(down))
    depth = _per_level(cfg.get("transformer_layers_per_block", 1), len(down))
    out = []
    for i, kind in enumerate(down):
        if kind.startswith("CrossAttn"):
            out += [(f"down_blocks.{i}.attentions.{j}", depth[i]) for j in range(layers[i])]
    out.append(("mid_block.attentions.0", depth[-1]))
    rlayers, rdepth = layers[::-1], depth[::-1]
    for i, kind in enumerate(up):
        if kind.startswith("CrossAttn"):
            out += [(f"up_blocks.{i}.attentions.{j}", rdepth[i]) for j in range(rlayers[i] + 1)]
    return out


def _sgm_layout(cfg: Mapping[str, Any]) -> list[tuple[str, int]]:
    """(SpatialTransformer path, depth) in the SGM UNet, built the way its constructor appends blocks."""
    down = list(cfg["down_block_types"])
    levels = len(down)
    layers = _per_level(cfg["layers_per_block"], levels)
    depth = _per_level(cfg.get("transformer_layers_per_block", 1), levels)
    attention = [kind.startswith("CrossAttn") for kind in down]
    input_blocks: list[list[str]] = [["conv_in"]]
    for level in range(levels):
        for _ in range(layers[level]):
            input_blocks.append(["resnet"] + (["transformer"] if attention[level] else []))
        if level != levels - 1:
            input_blocks.append(["downsample"])
    output_blocks: list[list[str]] = []
    for level in reversed(range(levels)):
        for i in range(layers[level] + 1):
            block = ["resnet"] + (["transformer"] if attention[level] else [])
            if level and i == layers[level]:
                block.append("upsample")
            output_blocks.append(block)
    out = []
    level_of_input = [None]  # which level each input block belongs to, for its transformer depth
    for level in range(levels):
        level_of_input += [level] * (layers[level] + (level != levels - 1))
    for n, block in enumerate(input_blocks):
        if "transformer" in block:
            out.append((f"input_blocks.{n}.{block.index('transformer')}", depth[level_of_input[n]]))
    out.append(("middle_block.1", depth[-1]))
    level_of_output = [level for level in reversed(range(levels)) for _ in range(layers[level] + 1)]
    for n, block in enumerate(output_blocks):
        if "transformer" in block:
            out.append((f"output_blocks.{n}.{block.index('transformer')}", depth[level_of_output[n]]))
    return out


def _matches(child: str, targets) -> bool:
    # peft's rule for a list of target names: the module path ends with ".<target>" (or is it)
    return targets is None or any(child == t or child.endswith("." + t) for t in targets)


def unet_module_names(family: str, unet_config: Mapping[str, Any], targets=None) -> set[str]:
    """`lora_unet_…` module names kohya creates for this UNet (only those ending in `targets`, if given)."""
    layout = _sgm_layout(unet_config) if family == "sdxl" else diffusers_layout(unet_config)
    return {("lora_unet." + path + "." + child).replace(".", "_")
            for path, depth in layout for child in transformer_children(depth) if _matches(child, targets)}


def text_encoder_module_names(prefix: str, num_layers: int, targets=None) -> set[str]:
    """`lora_te*_text_model_encoder_layers_…` names kohya creates for one CLIP text encoder."""
    return {(f"{prefix}.text_model.encoder.layers.{n}.{child}").replace(".", "_")
            for n in range(num_layers) for child in _CLIP_LAYER_CHILDREN if _matches(child, targets)}


def file_module_names(keys) -> set[str]:
    """The module names of a kohya LoRA file's keys (`<module>.lora_down.weight`, `.lora_up.weight`, `.alpha`)."""
    return {k.split(".", 1)[0] for k in keys}
