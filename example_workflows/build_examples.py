"""Writes the example workflows in this folder from the node classes (run: `python tests/test_workflows.py --write`).

Every widget gets its INPUT_TYPES default unless CHOICES below sets it, and inputs and outputs are laid out
as the ComfyUI frontend saves them (sockets, then widget inputs, each in INPUT_TYPES order), so a node that
gains an input only needs a re-run. Edit the graphs here, not in the JSON; tests/test_workflows.py checks
the JSON against the nodes either way. ComfyUI lists the *.json files here (not in api/) as templates;
api/train_api.json is the same job as train_from_folder.json for POST /prompt: {"prompt": <its content>}.
"""
from __future__ import annotations

from pathlib import Path

HERE = Path(__file__).resolve().parent
CKPT = "v1-5-pruned-emaonly.safetensors"
TRIGGER = "wcfox"
NOTE = ("LoRA Studio example. Copy example_data/watercolor_fox from the LoRA Studio folder into ComfyUI/input, put an "
        "SD 1.5 checkpoint into models/checkpoints, press R, then Run. The loss chart fills on Train LoRA; the LoRA "
        "lands in models/loras.\n\n"
        "Kopiere example_data/watercolor_fox aus dem LoRA-Studio-Ordner nach ComfyUI/input, lege ein "
        "SD-1.5-Checkpoint nach models/checkpoints, drücke R und dann Ausführen (Run).")
# Widget values that differ from the node's defaults (the rest follow INPUT_TYPES).
CHOICES = {
    "LoraStudio_LoadDataset": {"dataset": "watercolor_fox", "trigger_token": TRIGGER, "placeholder": "<my_token>"},
    "LoraStudio_ConfigureLoRA": {"ckpt_name": CKPT, "preset": "Fotostudio – Schnellstart", "name": "watercolor_fox",
                                 "seed": 42, "control_after_generate": "fixed"},  # a training seed stays put
    "LoraStudio_SaveLoRAToModels": {"filename": ""},
    "CheckpointLoaderSimple": {"ckpt_name": CKPT},
    "EmptyLatentImage": {"width": 512, "height": 512, "batch_size": 1},
    "KSampler": {"seed": 42, "control_after_generate": "fixed", "steps": 25, "cfg": 7.0, "sampler_name": "euler",
                 "scheduler": "normal", "denoise": 1.0},
}


def _default(inp) -> object:
    if "default" in inp.opts:
        return inp.opts["default"]
    if isinstance(inp.type, (list, tuple)) and inp.type:
        return inp.type[0]
    return {"INT": 0, "FLOAT": 0.0, "STRING": "", "BOOLEAN": False}.get(inp.type_name, "")


class Graph:
    def __init__(self, reg: dict):
        self.reg, self.nodes, self.links = reg, [], []

    def node(self, nid: int, type_: str, pos, size, title: str | None = None, **values) -> dict:
        spec = self.reg[type_]
        choice = {**CHOICES.get(type_, {}), **values}
        widgets = []
        for inp in spec.widgets:
            widgets.append(choice.get(inp.name, _default(inp)))
            if inp.has_control:
                widgets.append(choice.get("control_after_generate", "fixed"))
        inputs = [{"name": i.name, "type": i.type_name, "link": None} for i in spec.sockets]
        inputs += [{"name": i.name, "type": i.type_name, "widget": {"name": i.name}, "link": None} for i in spec.widgets]
        n = {"id": nid, "type": type_, "pos": list(pos), "size": list(size), "flags": {}, "order": 0, "mode": 0,
             "inputs": inputs, "outputs": [{"name": nm, "type": t, "links": []}
                                           for nm, t in zip(spec.output_names, spec.outputs)],
             "properties": {"Node name for S&R": type_}, "widgets_values": widgets}
        if title:
            n["title"] = title
        self.nodes.append(n)
        return n

    def note(self, nid: int, pos, size, text: str = NOTE) -> None:
        self.nodes.append({"id": nid, "type": "Note", "pos": list(pos), "size": list(size), "flags": {}, "order": 0,
                           "mode": 0, "inputs": [], "outputs": [], "properties": {}, "widgets_values": [text],
                           "color": "#432", "bgcolor": "#653"})

    def link(self, src: int, out_slot: int, dst: int, input_name: str) -> None:
        s = next(n for n in self.nodes if n["id"] == src)
        d = next(n for n in self.nodes if n["id"] == dst)
        slot = next(i for i, e in enumerate(d["inputs"]) if e["name"] == input_name)
        lid = len(self.links) + 1
        self.links.append([lid, src, out_slot, dst, slot, s["outputs"][out_slot]["type"]])
        s["outputs"][out_slot]["links"].append(lid)
        d["inputs"][slot]["link"] = lid

    def workflow(self, uid: str) -> dict:
        deps = {n["id"]: [ln[1] for ln in self.links if ln[3] == n["id"]] for n in self.nodes}
        order: list[int] = []

        def visit(i: int) -> None:
            if i not in order:
                for d in deps[i]:
                    visit(d)
                order.append(i)

        for n in sorted(self.nodes, key=lambda n: n["id"]):
            visit(n["id"])
        for n in self.nodes:
            n["order"] = order.index(n["id"])
        self.nodes.sort(key=lambda n: n["id"])
        return {"id": uid, "revision": 0, "last_node_id": max(order), "last_link_id": len(self.links),
                "nodes": self.nodes, "links": self.links, "groups": [], "config": {},
                "extra": {"ds": {"scale": 0.8, "offset": [40, 40]}}, "version": 0.4}


def train_from_folder(reg: dict) -> dict:
    g = Graph(reg)
    g.node(1, "LoraStudio_LoadDataset", (40, 60), (360, 130))
    g.node(2, "LoraStudio_ConfigureLoRA", (40, 240), (440, 840))
    g.node(3, "LoraStudio_TrainLoRA", (540, 60), (440, 380))
    g.node(4, "LoraStudio_SaveLoRAToModels", (1040, 60), (360, 90))
    g.note(5, (1040, 200), (400, 170))
    g.link(1, 0, 3, "dataset")
    g.link(2, 0, 3, "config")
    g.link(3, 0, 4, "lora")
    return g.workflow("5d0f7a52-8c3e-4c1b-9a57-1f0a6b2f4e01")


def train_apply_sample(reg: dict) -> dict:
    """Train, then sample with the fresh LoRA through Train LoRA's MODEL/CLIP outputs (no Load LoRA needed)."""
    g = Graph(reg)
    g.node(1, "LoraStudio_LoadDataset", (40, 60), (360, 130))
    g.node(2, "LoraStudio_ConfigureLoRA", (40, 240), (440, 840))
    g.node(3, "LoraStudio_TrainLoRA", (540, 240), (440, 380))
    g.node(4, "LoraStudio_SaveLoRAToModels", (1040, 60), (360, 90))
    g.node(5, "CheckpointLoaderSimple", (540, 60), (440, 100))
    g.node(6, "CLIPTextEncode", (1040, 200), (400, 160), "CLIP Text Encode (Positive Prompt)",
           text=f"watercolor painting of {TRIGGER} fox sitting in a garden")
    g.node(7, "CLIPTextEncode", (1040, 400), (400, 160), "CLIP Text Encode (Negative Prompt)",
           text="blurry, low quality, text, watermark")
    g.node(8, "EmptyLatentImage", (1040, 600), (400, 110))
    g.node(9, "KSampler", (1480, 200), (320, 270))
    g.node(10, "VAEDecode", (1840, 200), (220, 50))
    g.node(11, "PreviewImage", (2100, 200), (400, 440))
    g.note(12, (40, 1110), (440, 170))
    for src, slot, dst, name in ((1, 0, 3, "dataset"), (2, 0, 3, "config"), (5, 0, 3, "model"), (5, 1, 3, "clip"),
                                 (3, 0, 4, "lora"), (3, 2, 6, "clip"), (3, 2, 7, "clip"), (3, 1, 9, "model"),
                                 (6, 0, 9, "positive"), (7, 0, 9, "negative"), (8, 0, 9, "latent_image"),
                                 (9, 0, 10, "samples"), (5, 2, 10, "vae"), (10, 0, 11, "images")):
        g.link(src, slot, dst, name)
    return g.workflow("9b6e2c1d-3f4a-4e8b-8c2d-7a1e5f9c0b02")


def api_prompt(wf: dict, reg: dict, titles: dict, ui_to_api) -> dict:
    """What the frontend's Export (API) writes: the prompt for POST /prompt, with node titles in _meta."""
    prompt = ui_to_api(wf, reg)
    names = {str(n["id"]): n.get("title") or titles.get(n["type"], n["type"]) for n in wf["nodes"]}
    return {k: {"inputs": v["inputs"], "class_type": v["class_type"], "_meta": {"title": names[k]}}
            for k, v in prompt.items()}


def write_all(reg: dict, titles: dict, ui_to_api, dump_json) -> list[Path]:
    folder = train_from_folder(reg)
    files = {"train_from_folder.json": folder, "train_apply_sample.json": train_apply_sample(reg),
             # One folder down: ComfyUI offers every *.json here as a template and would fail to open a prompt.
             "api/train_api.json": api_prompt(folder, reg, titles, ui_to_api)}
    for name, data in files.items():
        (HERE / name).parent.mkdir(exist_ok=True)
        (HERE / name).write_text(dump_json(data), encoding="utf-8")
    return [HERE / n for n in files]
