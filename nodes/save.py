"""SaveLoRAToModels: the trained LoRA into ComfyUI's LoRA folder, at once visible to Load LoRA."""
from __future__ import annotations

from pathlib import Path

from ..trainer.errors import LoraStudioError
from ..trainer.export import save_lora, write_json_atomic
from ..trainer.job import record_output
from ..trainer.runstate import clean_partials
from .comfy_bridge import CATEGORY, LORA_TYPE, loras_dir, refresh_lora_list


class SaveLoRAToModels:
    DESCRIPTION = ("Writes the LoRA into models/loras (kohya format: Load LoRA, A1111/Forge, InvokeAI and diffusers "
                   "read it), with its adapter_config and job record beside it. Never overwrites: an existing name "
                   "gets a number. The Load LoRA list shows the file without a restart.")
    CATEGORY = CATEGORY
    RETURN_TYPES = ("STRING",)
    RETURN_NAMES = ("lora_name",)
    OUTPUT_TOOLTIPS = ("The file name as Load LoRA lists it.",)
    FUNCTION = "save"
    OUTPUT_NODE = True

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "lora": (LORA_TYPE, {"tooltip": "From Train LoRA (LoRA Studio)."}),
                "filename": ("STRING", {"default": "", "tooltip": "File name without extension; empty = the name "
                                        "from Configure LoRA. Letters, digits, - and _ only; others become _."}),
            },
        }

    def save(self, lora: dict, filename: str = ""):
        folder = loras_dir()
        clean_partials(folder)  # half-written files of killed saves (only those of processes that are gone)
        path, cfg_path = save_lora(folder, filename.strip() or lora["name"], lora["tensors"], lora["metadata"],
                                   lora["adapter_config"])
        record = dict(lora["record"])
        record_output(record, path, cfg_path)
        notes = []
        # The LoRA and its adapter config are written and complete: a record that cannot be written (disk full)
        # is said plainly instead of failing the node, which would hide that the LoRA exists.
        for target in [path.with_suffix(".job.json")] + ([Path(lora["record_path"])] if lora.get("record_path") else []):
            try:
                write_json_atomic(target, record)  # the job record learns where the file went
            except LoraStudioError as e:
                notes.append(f"warning: the LoRA is saved, but {target.name} could not be written: {e}")
        refresh_lora_list()
        name = path.relative_to(folder).as_posix()
        return {"ui": {"text": [f"saved {name}", *notes]}, "result": (name,)}
