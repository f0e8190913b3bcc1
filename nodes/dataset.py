"""LoadDataset: a folder or ZIP from ComfyUI's input directory → a checked dataset and its report."""
from __future__ import annotations

from pathlib import Path

from ..trainer.config import field_default, spec
from ..trainer.data import confine
from ..trainer.data.quality import file_sha256
from .comfy_bridge import CATEGORY, DATASET_TYPE, allowed_roots, input_dir


def dataset_choices() -> list[str]:
    """Sub-folders and .zip files of the input directory (one level deep), as names relative to it."""
    root = input_dir()
    if not root.is_dir():
        return []
    out = []
    for p in sorted(root.iterdir()):
        if p.name.startswith("."):
            continue
        if p.is_dir() or p.suffix.lower() == ".zip":
            out.append(p.name)
    return out


def resolve_dataset(name: str) -> Path:
    """The dataset's folder, confined to the allowed roots; a ZIP is imported once next to itself."""
    path = confine(name, allowed_roots())  # input folder + LORA_STUDIO_ALLOWED_ROOTS; names are relative to input
    if path.suffix.lower() == ".zip" and path.is_file():
        return _import_zip_once(path)
    return path


def _import_zip_once(zip_path: Path) -> Path:
    from ..trainer.data import import_zip

    digest = file_sha256(zip_path)[:10]  # streamed and remembered: a large ZIP is not read into memory
    target = zip_path.with_name(f"{zip_path.stem}-{digest}")
    if target.is_dir():  # the same ZIP was imported before: reuse it rather than unpack again
        return target
    return import_zip(zip_path, zip_path.parent, name=target.name)


class LoadDataset:
    DESCRIPTION = ("Loads training pictures from a folder or ZIP in ComfyUI's input directory: images/ + "
                   "metadata.jsonl (the AI4ArtsEd layout), or images with .txt captions. Checks them and shows a "
                   "report; problems that would spoil training stop here, before any model loads.")
    CATEGORY = CATEGORY
    RETURN_TYPES = (DATASET_TYPE, "STRING")
    RETURN_NAMES = ("dataset", "report")
    OUTPUT_TOOLTIPS = ("The checked dataset, for Train LoRA.", "The quality report as text.")
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "dataset": (dataset_choices(), {"tooltip": "A folder or .zip inside ComfyUI's input directory. "
                                                "Upload a ZIP (images + metadata.jsonl) or copy a folder there, then "
                                                "press R to refresh this list."}),
                "trigger_token": ("STRING", {"default": "", "tooltip": spec("trigger_token").help}),
            },
            "optional": {
                "placeholder": ("STRING", {"default": field_default("placeholder"), "tooltip": spec("placeholder").help}),
            },
        }

    @classmethod
    def IS_CHANGED(cls, dataset: str, trigger_token: str = "", placeholder: str = "<my_token>"):
        """Names, sizes and times of the dataset's files: a changed folder trains again when queued."""
        from ..trainer.data.fingerprint import dataset_fingerprint

        try:
            path = confine(dataset, allowed_roots())
        except Exception:  # noqa: BLE001 — the run itself names the problem; the cache just must not hide it
            return f"unresolved:{dataset}"
        return f"{dataset_fingerprint(path)}|{trigger_token}|{placeholder}"

    def load(self, dataset: str, trigger_token: str, placeholder: str = "<my_token>"):
        root = resolve_dataset(dataset)
        ds, report = _checked(root, trigger_token.strip(), placeholder)
        return ({"root": str(root), "trigger_token": trigger_token.strip(), "placeholder": placeholder,
                 "dataset": ds, "report": report}, report)


def _checked(root: Path, trigger: str, placeholder: str):
    from ..trainer.data import check_dataset

    # Judged at 512 px here; Train LoRA checks again at the run's own resolution and preset.
    ds, rep = check_dataset(root, resolution=512, trigger_token=trigger, placeholder=placeholder,
                            allowed_roots=allowed_roots())
    return ds, rep.to_text()
