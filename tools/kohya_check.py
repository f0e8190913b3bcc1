"""Our SD1.5 and SDXL files read by kohya's sd-scripts' own code (not a table of its names: its modules).

For each family and target set it exports our file at full size (tests/support/full_size_export: peft
adapters on the real architecture, built on the meta device, through our exporter), then runs

- continue training (`train_network.py --network_weights`): kohya's `networks/lora.py` create_network on
  kohya's own UNet (`library/sdxl_original_unet.py`, `library/original_unet.py`) and text encoders, apply_to,
  load_weights; it counts the keys kohya ignores (unexpected) and kohya's modules the file leaves out;
- merging (`networks/sdxl_merge_lora.py`, `networks/merge_lora.py`): merge_to_sd_model with its own module
  map; it counts its "no module found for LoRA weight" lines. The file's tensors go to the meta device, so
  the merge runs kohya's matching and arithmetic without 10 GB of weights.

sd-scripts is not part of this project: give a checkout (`git clone https://github.com/kohya-ss/sd-scripts`).
Run it in a Python where kohya's imports work: it pins transformers 4.54.1 and diffusers 0.32.1 (under
transformers 5 `CLIPTextModel` lost its `text_model` level, so kohya's own names for the first text encoder
change and nothing of any file's `lora_te1_text_model_…` merges), plus toml, imagesize and OpenCV. Without
touching a venv:

    pip install --target /tmp/kohya-deps --no-deps transformers==4.54.1 diffusers==0.32.1 \
        'huggingface_hub<1' 'tokenizers>=0.21,<0.22' toml imagesize opencv-python-headless
    PYTHONPATH=/tmp/kohya-deps python tools/kohya_check.py --sd-scripts /path/to/sd-scripts
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT = (["to_q", "to_k", "to_v", "to_out.0"], ["q_proj", "k_proj", "v_proj", "out_proj"])


class _Count(logging.Handler):
    def __init__(self):
        super().__init__()
        self.skipped = 0

    def emit(self, record):
        self.skipped += "no module found" in record.getMessage()


def _models(family: str):
    import torch
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    from tests.support.full_size_export import load_config

    with torch.device("meta"):
        if family == "sdxl":
            from library.sdxl_original_unet import SdxlUNet2DConditionModel

            return SdxlUNet2DConditionModel(), [
                CLIPTextModel(CLIPTextConfig(**load_config("sdxl", "text_encoder"))),
                CLIPTextModelWithProjection(CLIPTextConfig(**load_config("sdxl", "text_encoder_2")))]
        from library.original_unet import UNet2DConditionModel

        return (UNet2DConditionModel(sample_size=64, attention_head_dim=8, cross_attention_dim=768),
                [CLIPTextModel(CLIPTextConfig(**load_config("sd15", "text_encoder")))])


def check(family: str, unet_targets, te_targets, work: Path) -> dict:
    import torch
    from safetensors.torch import save_file

    from tests.support.full_size_export import export_full_size, materialise

    import lora  # kohya's networks/lora.py (its scripts import it so)
    merge = __import__("sdxl_merge_lora" if family == "sdxl" else "merge_lora")

    sd = materialise(export_full_size(family, unet_targets, te_targets)[0])
    path = work / f"ours_{family}.safetensors"
    save_file(sd, str(path))

    unet, encoders = _models(family)
    text_encoder = encoders if family == "sdxl" else encoders[0]  # kohya takes a list for SDXL only
    net = lora.create_network(1.0, 4, 4.0, None, text_encoder, unet)
    net.apply_to(text_encoder, unet, True, True)  # train_network.py's order
    info = net.load_weights(str(path))

    read = merge.load_state_dict

    def read_to_meta(file, dtype):  # kohya's reader, its tensors moved to the meta device like the models
        sd, metadata = read(file, dtype)
        return {k: v.to("meta", dtype) for k, v in sd.items()}, metadata

    merge.load_state_dict = read_to_meta
    counter = _Count()
    merge.logger.handlers[:], merge.logger.propagate = [counter], False
    merge.logger.setLevel(logging.INFO)
    try:
        if family == "sdxl":
            merge.merge_to_sd_model(encoders[0], encoders[1], unet, [str(path)], [1.0], [], torch.float32)
        else:
            merge.merge_to_sd_model(encoders[0], unet, [str(path)], [1.0], torch.float32)
    finally:
        merge.load_state_dict = read
    return {"our modules": len({k.split(".")[0] for k in sd}),
            "kohya's network modules": len(net.unet_loras) + len(net.text_encoder_loras),
            "keys --network_weights ignores": len(info.unexpected_keys),
            "kohya modules the file leaves out": len({k.split(".")[0] for k in info.missing_keys}),
            "modules the merge skips": counter.skipped}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sd-scripts", required=True, type=Path, help="a checkout of kohya-ss/sd-scripts")
    ap.add_argument("--families", default="sd15,sdxl")
    a = ap.parse_args(argv)
    if not (a.sd_scripts / "networks" / "lora.py").is_file():
        raise SystemExit(f"{a.sd_scripts} has no networks/lora.py: give a checkout of kohya-ss/sd-scripts")
    sys.path[:0] = [str(a.sd_scripts), str(a.sd_scripts / "networks"), str(REPO)]
    import transformers

    if not transformers.__version__.startswith("4."):
        raise SystemExit(f"transformers {transformers.__version__}: kohya pins 4.54.1 (see this file's docstring)")
    from trainer.config import TEXT_ENCODER_TARGETS, UNET_TARGETS

    rows = {}
    with tempfile.TemporaryDirectory() as work:
        for family in a.families.split(","):
            for label, (unet, te) in (("default targets", DEFAULT), ("all targets", (UNET_TARGETS, TEXT_ENCODER_TARGETS))):
                rows[f"{family}, {label}"] = check(family, unet, te, Path(work))
    print(json.dumps({"transformers": transformers.__version__, "files": rows}, indent=1))
    return 0 if all(r["keys --network_weights ignores"] == 0 and r["modules the merge skips"] == 0
                    for r in rows.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
