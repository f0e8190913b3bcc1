"""SaveLoRAToModels: the trained LoRA into ComfyUI's LoRA folder, at once visible to Load LoRA."""
from __future__ import annotations

from pathlib import Path

from ..trainer.atomic import write_json_atomic
from ..trainer.errors import LoraStudioError
from ..trainer.export import save_lora
from ..trainer.job import record_output
from ..trainer.runstate import clean_partials
from .comfy_bridge import CATEGORY, Lora, io, loras_dir, refresh_lora_list


class SaveLoRAToModels(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="LoraStudio_SaveLoRAToModels",
            display_name="Save LoRA to models/loras (LoRA Studio)",
            category=CATEGORY,
            description="Writes the LoRA into models/loras (kohya format: Load LoRA, A1111/Forge, InvokeAI and "
                        "diffusers read it), with its adapter_config and job record beside it. Never overwrites: an "
                        "existing name gets a number. The Load LoRA list shows the file without a restart.",
            inputs=[
                Lora.Input("lora", tooltip="From Train LoRA (LoRA Studio)."),
                io.String.Input("filename", default="", tooltip="File name without extension; empty = the name from "
                                "Configure LoRA. Letters, digits, - and _ only; others become _."),
            ],
            outputs=[io.String.Output("lora_name", display_name="lora_name", tooltip="The file name as Load LoRA lists it.")],
            is_output_node=True,
        )

    @classmethod
    def execute(cls, lora: dict, filename: str = "") -> io.NodeOutput:
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
                write_json_atomic(target, record, overwrite=True)  # the job record learns where the file went
            except LoraStudioError as e:
                notes.append(f"warning: the LoRA is saved, but {target.name} could not be written: {e}")
        refresh_lora_list()
        name = path.relative_to(folder).as_posix()
        # ui.job: the node finds its record again when the graph is shown again (tab switch, reload)
        return io.NodeOutput(name, ui={"text": [f"saved {name}", *notes], "job": [record.get("id") or ""]})
