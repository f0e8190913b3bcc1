"""LoadDataset: a folder or ZIP from ComfyUI's input directory → a checked dataset and its report."""
from __future__ import annotations

from pathlib import Path

from ..trainer import LoraStudioError
from ..trainer.config import field_default, spec
from ..trainer.data import confine
from ..trainer.data.quality import file_sha256
from .comfy_bridge import CATEGORY, Dataset, allowed_roots, input_dir, io


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


def confine_dataset(name: str) -> Path:
    """The folder resolve_dataset gives for `name`, without importing anything (for the live command)."""
    path = confine(name, allowed_roots())
    return _zip_target(path) if path.suffix.lower() == ".zip" and path.is_file() else path


def _zip_target(zip_path: Path) -> Path:
    digest = file_sha256(zip_path)[:10]  # streamed and remembered: a large ZIP is not read into memory
    return zip_path.with_name(f"{zip_path.stem}-{digest}")


def _import_zip_once(zip_path: Path) -> Path:
    from ..trainer.data import import_zip

    target = _zip_target(zip_path)
    if target.is_dir():  # the same ZIP was imported before: reuse it rather than unpack again
        return target
    return import_zip(zip_path, zip_path.parent, name=target.name)


class LoadDataset(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="LoraStudio_LoadDataset",
            display_name="Load Dataset (LoRA Studio)",
            category=CATEGORY,
            description="Loads training pictures from a folder or ZIP in ComfyUI's input directory: images/ + "
                        "metadata.jsonl (the AI4ArtsEd layout), or images with .txt captions. Checks them and shows "
                        "a report; problems that would spoil training stop here, before any model loads.",
            inputs=[
                io.Combo.Input("dataset", options=dataset_choices(), tooltip="A folder or .zip inside ComfyUI's "
                               "input directory. Upload a ZIP (images + metadata.jsonl) or copy a folder there, then "
                               "press R to refresh this list."),
                io.String.Input("trigger_token", default="", tooltip=spec("trigger_token").help),
                io.String.Input("placeholder", default=field_default("placeholder"), optional=True,
                                tooltip=spec("placeholder").help),
            ],
            outputs=[
                Dataset.Output("dataset_out", display_name="dataset", tooltip="The checked dataset, for Train LoRA."),
                io.String.Output("report", display_name="report", tooltip="The quality report as text."),
            ],
        )

    @classmethod
    def fingerprint_inputs(cls, dataset: str, trigger_token: str = "", placeholder: str = "<my_token>"):
        """Names, sizes and times of the dataset's files: a changed folder trains again when queued, although
        the widget values stay the same."""
        from ..trainer.data.fingerprint import dataset_fingerprint

        try:
            path = confine(dataset, allowed_roots())
        except (LoraStudioError, OSError):  # the run itself names the problem; the cache just must not hide it
            return f"unresolved:{dataset}"
        return f"{dataset_fingerprint(path)}|{trigger_token}|{placeholder}"

    @classmethod
    def execute(cls, dataset: str, trigger_token: str, placeholder: str = "<my_token>") -> io.NodeOutput:
        data, report = checked_dataset(resolve_dataset(dataset), trigger_token.strip(), placeholder)
        return io.NodeOutput(data, report)


def checked_dataset(root: Path, trigger: str, placeholder: str, roots: list[Path] | None = None) -> tuple[dict, str]:
    """The DATASET value Train LoRA takes, and the report text; the check raises on blocking problems."""
    from ..trainer.data import check_dataset

    # Judged at 512 px here; Train LoRA checks again at the run's own resolution and preset.
    ds, rep = check_dataset(root, resolution=512, trigger_token=trigger, placeholder=placeholder,
                            allowed_roots=roots if roots is not None else allowed_roots())
    report = rep.to_text()
    return {"root": str(root), "trigger_token": trigger, "placeholder": placeholder, "dataset": ds,
            "report": report}, report
