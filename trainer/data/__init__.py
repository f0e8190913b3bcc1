"""Datasets: discovery (metadata.jsonl, caption files), safe image loading, training tensors."""
from .discover import Dataset, Sample, load_dataset
from .images import IMAGE_EXTENSIONS, load_rgb, to_training_tensor

__all__ = ["Dataset", "Sample", "load_dataset", "IMAGE_EXTENSIONS", "load_rgb", "to_training_tensor"]
