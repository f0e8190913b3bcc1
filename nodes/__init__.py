"""ComfyUI adapters over `trainer/`. Node ids are public API: prefixed, never renamed."""
from .configure import ConfigureLoRA
from .dataset import LoadDataset
from .save import SaveLoRAToModels
from .train import TrainLoRA

NODE_CLASS_MAPPINGS = {
    "LoraStudio_LoadDataset": LoadDataset,
    "LoraStudio_ConfigureLoRA": ConfigureLoRA,
    "LoraStudio_TrainLoRA": TrainLoRA,
    "LoraStudio_SaveLoRAToModels": SaveLoRAToModels,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "LoraStudio_LoadDataset": "Load Dataset (LoRA Studio)",
    "LoraStudio_ConfigureLoRA": "Configure LoRA (LoRA Studio)",
    "LoraStudio_TrainLoRA": "Train LoRA (LoRA Studio)",
    "LoraStudio_SaveLoRAToModels": "Save LoRA to models/loras (LoRA Studio)",
}
