"""ComfyUI adapters over `trainer/`, in ComfyUI's V3 node API. Node ids are public API: prefixed, never renamed.

A new node: a module with one `io.ComfyNode` class, added to NODES below.
"""
from comfy_api.latest import ComfyExtension, io

from .configure import ConfigureLoRA
from .dataset import LoadDataset
from .images import DatasetFromImages
from .save import SaveLoRAToModels
from .train import TrainLoRA

NODES: list[type[io.ComfyNode]] = [LoadDataset, DatasetFromImages, ConfigureLoRA, TrainLoRA, SaveLoRAToModels]


class LoraStudioExtension(ComfyExtension):
    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        return list(NODES)


async def comfy_entrypoint() -> LoraStudioExtension:
    from .routes import register

    register()  # the LoRA Studio sidebar's /lora_studio/... routes on ComfyUI's server (False without one)
    return LoraStudioExtension()


def node_mappings() -> tuple[dict[str, type[io.ComfyNode]], dict[str, str]]:
    """{node id: class} and {node id: display name}, as ComfyUI registers them (for tests and tools)."""
    schemas = {cls: cls.GET_SCHEMA() for cls in NODES}
    return ({s.node_id: cls for cls, s in schemas.items()}, {s.node_id: s.display_name for s in schemas.values()})


def __getattr__(name: str):
    # NODE_CLASS_MAPPINGS / NODE_DISPLAY_NAME_MAPPINGS in V1 shape, for tools and tests that walk the nodes.
    # Deliberately not on the pack's __init__: ComfyUI would then register the pack the V1 way.
    if name in ("NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS"):
        return node_mappings()[name == "NODE_DISPLAY_NAME_MAPPINGS"]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
