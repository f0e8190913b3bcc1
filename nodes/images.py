"""DatasetFromImages: IMAGE batches from the graph (Load Image, a generation, a folder loader) + captions → the
same checked dataset as Load Dataset gives, with its report."""
from __future__ import annotations

from ..trainer.export import sanitize_name
from ..trainer.config import field_default, spec
from ..trainer.data.from_images import split_captions, write_image_dataset
from .comfy_bridge import CATEGORY, Dataset, io, studio_dir
from .dataset import checked_dataset


class DatasetFromImages(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="LoraStudio_DatasetFromImages",
            display_name="Dataset from Images (LoRA Studio)",
            category=CATEGORY,
            description="Makes a training dataset from pictures in the graph (Load Image, VAE Decode, a batch node) "
                        "and their captions. The pictures are saved once under output/lora_studio/datasets and go "
                        "through the same checks, report and latent cache as a folder from Load Dataset.",
            inputs=[
                io.Image.Input("images", tooltip="The training pictures, as one IMAGE batch (combine several with "
                               "an image batch node)."),
                io.String.Input("captions", multiline=True, default="a picture of <my_token>", tooltip="One "
                                "caption per line, one line per picture in the batch's order, or a single line for "
                                "all of them. Write the placeholder where the concept belongs."),
                io.String.Input("trigger_token", default="", tooltip=spec("trigger_token").help),
                io.String.Input("placeholder", default=field_default("placeholder"), optional=True,
                                tooltip=spec("placeholder").help),
                io.String.Input("name", default="graph_images", optional=True, tooltip="A name for the saved "
                                "picture set (a hash of the pictures is added: the same pictures reuse the folder)."),
            ],
            outputs=[
                Dataset.Output("dataset_out", display_name="dataset", tooltip="The checked dataset, for Train LoRA."),
                io.String.Output("report", display_name="report", tooltip="The quality report as text."),
            ],
        )

    @classmethod
    def execute(cls, images, captions: str, trigger_token: str, placeholder: str = "<my_token>",
                name: str = "graph_images") -> io.NodeOutput:
        parent = studio_dir("datasets")
        pictures = [img.detach().cpu().float().numpy() for img in images]  # IMAGE: [batch, height, width, 3]
        root = write_image_dataset(pictures, split_captions(captions), parent, sanitize_name(name or "graph_images"))
        data, report = checked_dataset(root, trigger_token.strip(), placeholder, roots=[parent])
        return io.NodeOutput(data, report)
