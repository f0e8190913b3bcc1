"""Datasets: discovery, checks and report, safe image loading, ZIP import, buckets, caption options, latent cache.

    safety.py     allowed roots (`confine`), safe relative names, a walker that never leaves the folder
    discover.py   (image, caption) pairs: metadata.jsonl, imagefolder, caption files, kohya repeat folders
    images.py     decoding any mode to 8-bit sRGB with EXIF orientation; training tensors
    quality.py    sharpness, perceptual hash, file hash
    report.py     `check_dataset`: the guide's checklist as a report (findings.py: its data types)
    zipimport.py  `import_zip`: a ZIP into a new folder, validated before the first byte is written
    buckets.py    aspect-ratio buckets
    captions.py   trigger token, caption dropout, tag shuffling, negative prompts
    cache.py      content-keyed latent cache
"""
from .buckets import MAX_ASPECT, bucket_set, plan_buckets
from .cache import LatentCache
from .captions import (apply_caption_dropout, apply_trigger, augment_caption, read_negative_prompts,
                       shuffle_tags)
from .discover import Dataset, Sample
from .findings import DatasetCheckError, DatasetReport, Finding
from .images import IMAGE_EXTENSIONS, MAX_PIXELS, image_size, load_rgb, to_training_tensor
from .quality import BLUR_THRESHOLD, NEAR_DUPLICATE_BITS
from .report import check_dataset, load_dataset
from .safety import ALLOWED_ROOTS_ENV, confine, env_allowed_roots
from .zipimport import ZipLimits, import_zip

__all__ = [
    "Dataset", "Sample", "load_dataset", "IMAGE_EXTENSIONS", "MAX_PIXELS", "load_rgb", "image_size",
    "to_training_tensor", "check_dataset", "DatasetReport", "Finding", "DatasetCheckError", "BLUR_THRESHOLD",
    "NEAR_DUPLICATE_BITS", "confine", "env_allowed_roots", "ALLOWED_ROOTS_ENV", "import_zip", "ZipLimits",
    "plan_buckets", "bucket_set", "MAX_ASPECT", "LatentCache", "shuffle_tags", "apply_caption_dropout",
    "augment_caption", "apply_trigger", "read_negative_prompts",
]
