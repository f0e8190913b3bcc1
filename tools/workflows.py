"""The example workflows: how they are built, turned into API prompts and checked against node definitions.

Node definitions are in ComfyUI's `/object_info` format ({"input": {"required": …, "optional": …},
"input_order": …, "output": […], "output_name": […], "output_node": bool}). tools/generate.py builds them
from the node classes (ours and ComfyUI's own) to write example_workflows/*.json; the e2e suite
(tests/e2e/test_workflows_server.py) reads them from the real server's /object_info and checks the files
with the same functions, so no table of core nodes is written down anywhere.

ComfyUI lists every *.json in example_workflows/ (not in api/) under Browse Templates, and both frontends
(1.27 bundled with 0.3.64, and 1.58) show a custom node's template under its FILE NAME, as title and as
description: so the file names are the titles. api/train_api.json is the first template's job for
POST /prompt ({"prompt": <its content>}), exactly what the frontend's Export (API) makes of it.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
WORKFLOWS = REPO / "example_workflows"
FROM_FOLDER = "Train a LoRA from a dataset folder.json"
TRAIN_AND_SAMPLE = "Train a LoRA, then sample with it.json"
API_PROMPT = "api/train_api.json"
TEMPLATES = (FROM_FOLDER, TRAIN_AND_SAMPLE)

# The checkpoint is left empty: any name written here is "missing" on most servers, and the 1.58 frontend
# then marks the node red and warns on Run; the note and the node's own message ask the user to pick one.
CKPT = ""
SAMPLE_DATASET = "watercolor_fox"
TRIGGER = "wcfox"
NOTE = ("LoRA Studio: 1. pick your checkpoint (SD 1.5, SD 2.x or SDXL, from models/checkpoints) in Configure "
        "LoRA's ckpt_name{also}. 2. Copy example_data/watercolor_fox from the LoRA Studio folder into "
        "ComfyUI/input (or upload a ZIP in the LoRA Studio sidebar) and press R. 3. Run. The loss chart fills on "
        "Train LoRA; the LoRA lands in models/loras.\n\n"
        "1. Wähle dein Checkpoint (SD 1.5, SD 2.x oder SDXL, aus models/checkpoints) bei ckpt_name in LoRA "
        "einstellen{also_de}. 2. Kopiere example_data/watercolor_fox aus dem LoRA-Studio-Ordner nach "
        "ComfyUI/input (oder lade ein ZIP in der LoRA-Studio-Seitenleiste hoch) und drücke R. 3. Ausführen (Run).")
# Widget values that differ from the node's defaults (the rest follow the node definitions).
CHOICES = {
    "LoraStudio_LoadDataset": {"dataset": SAMPLE_DATASET, "trigger_token": TRIGGER, "placeholder": "<my_token>"},
    "LoraStudio_ConfigureLoRA": {"ckpt_name": CKPT, "preset": "Fotostudio – Schnellstart", "name": "watercolor_fox",
                                 "seed": 42, "control_after_generate": "fixed"},  # a training seed stays put
    "LoraStudio_SaveLoRAToModels": {"filename": ""},
    "CheckpointLoaderSimple": {"ckpt_name": CKPT},
    "EmptyLatentImage": {"width": 512, "height": 512, "batch_size": 1},
    "KSampler": {"seed": 42, "control_after_generate": "fixed", "steps": 25, "cfg": 7.0, "sampler_name": "euler",
                 "scheduler": "normal", "denoise": 1.0},
}
# Frontend-only nodes: never sent to the server (graphToPrompt skips them).
VIRTUAL_NODES = ("Note", "MarkdownNote")
WIDGET_TYPES = ("INT", "FLOAT", "STRING", "BOOLEAN", "COMBO")
CONTROL_VALUES = ("fixed", "increment", "decrement", "randomize")


# ----------------------------------------------------------------------------------- node definitions


def spec_from_class(cls) -> dict:
    """A node class (V1, or V3 through its V1 view) as /object_info describes it."""
    inputs = cls.INPUT_TYPES()
    sections = {s: dict(inputs.get(s) or {}) for s in ("required", "optional")}
    names = getattr(cls, "RETURN_NAMES", None) or cls.RETURN_TYPES
    return {"input": {s: {k: list(v) for k, v in d.items()} for s, d in sections.items() if d},
            "input_order": {s: list(d) for s, d in sections.items() if d},
            "output": list(cls.RETURN_TYPES), "output_name": list(names),
            "output_node": bool(getattr(cls, "OUTPUT_NODE", False))}


@dataclasses.dataclass
class Input:
    name: str
    type: object  # "INT", "MODEL", ... or the list of combo options
    opts: dict
    required: bool

    @property
    def type_name(self) -> str:
        return "COMBO" if isinstance(self.type, (list, tuple)) else str(self.type)

    @property
    def is_widget(self) -> bool:
        return self.type_name in WIDGET_TYPES and not self.opts.get("forceInput")

    @property
    def has_control(self) -> bool:
        """The frontend adds a 'control_after_generate' widget (fixed/increment/…) after this one."""
        if "control_after_generate" in self.opts:
            return bool(self.opts["control_after_generate"])
        return self.type_name == "INT" and self.name in ("seed", "noise_seed")  # the frontend's legacy rule


@dataclasses.dataclass
class NodeSpec:
    inputs: list[Input]
    outputs: tuple
    output_names: tuple
    output_node: bool

    @classmethod
    def of(cls, info: dict) -> "NodeSpec":
        out = []
        for section in ("required", "optional"):
            given = (info.get("input") or {}).get(section) or {}
            for name in (info.get("input_order") or {}).get(section) or list(given):
                spec = given[name]
                opts = dict(spec[1]) if len(spec) > 1 and isinstance(spec[1], dict) else {}
                kind = opts["options"] if spec[0] == "COMBO" and "options" in opts else spec[0]  # V3 combos
                out.append(Input(name, kind, opts, section == "required"))
        return cls(out, tuple(info["output"]), tuple(info.get("output_name") or info["output"]),
                   bool(info.get("output_node")))

    def input(self, name: str) -> Input | None:
        return next((i for i in self.inputs if i.name == name), None)

    @property
    def widgets(self) -> list[Input]:
        return [i for i in self.inputs if i.is_widget]

    @property
    def sockets(self) -> list[Input]:
        return [i for i in self.inputs if not i.is_widget]


def specs_of(object_info: dict) -> dict[str, NodeSpec]:
    return {name: NodeSpec.of(info) for name, info in object_info.items()}


def widget_slots(spec: NodeSpec) -> list[tuple[Input, bool]]:
    """(input, is_control_widget) in the order the frontend fills widgets_values."""
    out = []
    for inp in spec.widgets:
        out.append((inp, False))
        if inp.has_control:
            out.append((inp, True))
    return out


def widget_values(node: dict, spec: NodeSpec) -> dict:
    """A saved node's widget values by input name (control widgets left out)."""
    return {inp.name: v for (inp, control), v in zip(widget_slots(spec), node.get("widgets_values", [])) if not control}


# ----------------------------------------------------------------------------------- building the examples


def _default(inp: Input) -> object:
    if "default" in inp.opts:
        return inp.opts["default"]
    if isinstance(inp.type, (list, tuple)) and inp.type:
        return inp.type[0]
    return {"INT": 0, "FLOAT": 0.0, "STRING": "", "BOOLEAN": False}.get(inp.type_name, "")


class Graph:
    """A UI-format graph laid out as the frontend saves one (sockets, then widget inputs, in definition order)."""

    def __init__(self, specs: dict[str, NodeSpec]):
        self.specs, self.nodes, self.links = specs, [], []

    def node(self, nid: int, type_: str, pos, size, title: str | None = None, **values) -> dict:
        spec = self.specs[type_]
        choice = {**CHOICES.get(type_, {}), **values}
        widgets = []
        for inp, control in widget_slots(spec):
            widgets.append(choice.get("control_after_generate", "fixed") if control else choice.get(inp.name, _default(inp)))
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

    def note(self, nid: int, pos, size, text: str) -> None:
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


def _dataset_configure_train_save(g: Graph, train_at: tuple[int, int]) -> None:
    """Nodes 1-4 of every template: Load Dataset and Configure LoRA on the left, Train LoRA at `train_at`,
    Save LoRA to its right."""
    g.node(1, "LoraStudio_LoadDataset", (40, 60), (360, 130))
    g.node(2, "LoraStudio_ConfigureLoRA", (40, 240), (440, 840))
    g.node(3, "LoraStudio_TrainLoRA", train_at, (440, 380))
    g.node(4, "LoraStudio_SaveLoRAToModels", (1040, 60), (360, 90))


def train_from_folder(specs: dict[str, NodeSpec]) -> dict:
    g = Graph(specs)
    _dataset_configure_train_save(g, (540, 60))
    g.note(5, (1040, 200), (400, 260), NOTE.format(also="", also_de=""))
    g.link(1, 0, 3, "dataset")
    g.link(2, 0, 3, "config")
    g.link(3, 0, 4, "lora")
    return g.workflow("5d0f7a52-8c3e-4c1b-9a57-1f0a6b2f4e01")


def train_apply_sample(specs: dict[str, NodeSpec]) -> dict:
    """Train, then sample with the fresh LoRA through Train LoRA's MODEL/CLIP outputs (no Load LoRA needed)."""
    g = Graph(specs)
    _dataset_configure_train_save(g, (540, 240))
    g.node(5, "CheckpointLoaderSimple", (540, 60), (440, 100))
    g.node(6, "CLIPTextEncode", (1040, 200), (400, 160), "CLIP Text Encode (Positive Prompt)",
           text=f"watercolor painting of {TRIGGER} fox sitting in a garden")
    g.node(7, "CLIPTextEncode", (1040, 400), (400, 160), "CLIP Text Encode (Negative Prompt)",
           text="blurry, low quality, text, watermark")
    g.node(8, "EmptyLatentImage", (1040, 600), (400, 110))
    g.node(9, "KSampler", (1480, 200), (320, 270))
    g.node(10, "VAEDecode", (1840, 200), (220, 50))
    g.node(11, "PreviewImage", (2100, 200), (400, 440))
    g.note(12, (40, 1110), (440, 260), NOTE.format(also=" and the same one in Load Checkpoint",
                                                   also_de=" und dasselbe in Checkpoint laden"))
    for src, slot, dst, name in ((1, 0, 3, "dataset"), (2, 0, 3, "config"), (5, 0, 3, "model"), (5, 1, 3, "clip"),
                                 (3, 0, 4, "lora"), (3, 2, 6, "clip"), (3, 2, 7, "clip"), (3, 1, 9, "model"),
                                 (6, 0, 9, "positive"), (7, 0, 9, "negative"), (8, 0, 9, "latent_image"),
                                 (9, 0, 10, "samples"), (5, 2, 10, "vae"), (10, 0, 11, "images")):
        g.link(src, slot, dst, name)
    return g.workflow("9b6e2c1d-3f4a-4e8b-8c2d-7a1e5f9c0b02")


def ui_to_api(wf: dict, specs: dict[str, NodeSpec]) -> dict:
    """The API prompt the frontend's graphToPrompt makes from a UI workflow (without _meta)."""
    links = {ln[0]: ln for ln in wf["links"]}
    prompt = {}
    for node in sorted(wf["nodes"], key=lambda n: n["id"]):
        if node["type"] in VIRTUAL_NODES:
            continue
        spec = specs[node["type"]]
        inputs = widget_values(node, spec)
        for entry in node.get("inputs", []):
            if entry.get("link") is not None:
                ln = links[entry["link"]]
                inputs[entry["name"]] = [str(ln[1]), ln[2]]
        order = [i.name for i in spec.inputs]
        inputs = dict(sorted(inputs.items(), key=lambda kv: order.index(kv[0]) if kv[0] in order else len(order)))
        prompt[str(node["id"])] = {"class_type": node["type"], "inputs": inputs}
    return prompt


def strip_meta(prompt: dict) -> dict:
    return {k: {"class_type": v["class_type"], "inputs": v["inputs"]} for k, v in prompt.items()}


def api_prompt(wf: dict, specs: dict[str, NodeSpec], titles: dict) -> dict:
    """What the frontend's Export (API) writes: the prompt for POST /prompt, with node titles in _meta."""
    names = {str(n["id"]): n.get("title") or titles.get(n["type"], n["type"]) for n in wf["nodes"]}
    return {k: {"inputs": v["inputs"], "class_type": v["class_type"], "_meta": {"title": names[k]}}
            for k, v in ui_to_api(wf, specs).items()}


def build_all(specs: dict[str, NodeSpec], titles: dict) -> dict[str, dict]:
    """{path under example_workflows/: content} for every example."""
    folder = train_from_folder(specs)
    return {FROM_FOLDER: folder, TRAIN_AND_SAMPLE: train_apply_sample(specs),
            # One folder down: ComfyUI offers every *.json at the top as a template and would fail to open a prompt.
            API_PROMPT: api_prompt(folder, specs, titles)}


# ----------------------------------------------------------------------------------- checking them


def check_value(inp: Input, value) -> str | None:
    """Why a widget value would be rejected (None if it is fine)."""
    t, o = inp.type_name, inp.opts
    if t == "COMBO":
        options = list(inp.type) if isinstance(inp.type, (list, tuple)) else []
        return None if value in options else f"{value!r} is not one of {options[:8]}"
    if t == "INT":
        if not isinstance(value, int) or isinstance(value, bool):
            return f"{value!r} is not an integer"
    elif t == "FLOAT":
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            return f"{value!r} is not a number"
    elif t == "STRING":
        return None if isinstance(value, str) else f"{value!r} is not a string"
    elif t == "BOOLEAN":
        return None if isinstance(value, bool) else f"{value!r} is not true/false"
    if "min" in o and value < o["min"] or "max" in o and value > o["max"]:
        return f"{value!r} is outside {o.get('min')}..{o.get('max')}"
    return None


def _types_match(out_type: str, in_type: str) -> bool:
    return out_type == in_type or "*" in (out_type, in_type)


def validate_api(prompt: dict, specs: dict[str, NodeSpec], skip_values: tuple[str, ...] = ()) -> list[str]:
    """What POST /prompt checks before it queues: known class types, every required input, each input's
    name, link type, value type, range and choice. `skip_values` names inputs whose value is not checked."""
    errors: list[str] = []
    for nid, node in prompt.items():
        spec = specs.get(node.get("class_type"))
        where = f"node {nid} ({node.get('class_type')})"
        if spec is None:
            errors.append(f"{where}: unknown class_type")
            continue
        given = node.get("inputs") or {}
        errors += [f"{where}: required input {i.name!r} is missing" for i in spec.inputs if i.required and i.name not in given]
        for name, value in given.items():
            inp = spec.input(name)
            if inp is None:
                errors.append(f"{where}: {name!r} is not an input of this node")
            elif isinstance(value, list):  # a link: [origin node id, output index]
                origin = specs.get(prompt.get(str(value[0]), {}).get("class_type"))
                if origin is None or not 0 <= value[1] < len(origin.outputs):
                    errors.append(f"{where}.{name}: link {value!r} points to no output")
                elif not _types_match(origin.outputs[value[1]], inp.type_name):
                    errors.append(f"{where}.{name}: gets {origin.outputs[value[1]]} but takes {inp.type_name}")
            elif not inp.is_widget:
                errors.append(f"{where}.{name}: a {inp.type_name} input must be linked, not given {value!r}")
            elif name not in skip_values and (problem := check_value(inp, value)):
                errors.append(f"{where}.{name}: {problem}")
    if not any(specs[n["class_type"]].output_node for n in prompt.values() if n.get("class_type") in specs):
        errors.append("the prompt has no output node, so ComfyUI would run nothing")
    return errors


def validate_ui(wf: dict, specs: dict[str, NodeSpec], skip_values: tuple[str, ...] = ()) -> list[str]:
    """What the frontend needs to open the graph as meant: known types, widgets_values in definition order
    with valid values, input/output slots and link types that match the node definitions."""
    errors: list[str] = []
    links = {ln[0]: ln for ln in wf.get("links", [])}
    nodes = {n["id"]: n for n in wf.get("nodes", [])}
    for nid, node in nodes.items():
        where = f"node {nid} ({node.get('type')})"
        if node.get("type") in VIRTUAL_NODES:
            continue
        spec = specs.get(node.get("type"))
        if spec is None:
            errors.append(f"{where}: unknown node type")
            continue
        slots, values = widget_slots(spec), node.get("widgets_values", [])
        if len(values) != len(slots):
            errors.append(f"{where}: {len(values)} widgets_values, the node has {len(slots)} widgets: "
                          f"{[('control_after_generate' if c else i.name) for i, c in slots]}")
        for (inp, control), value in zip(slots, values):
            problem = (None if value in CONTROL_VALUES else f"{value!r} is not one of {CONTROL_VALUES}") if control \
                else None if inp.name in skip_values else check_value(inp, value)
            if problem:
                errors.append(f"{where}: widget {'control_after_generate of ' * control}{inp.name}: {problem}")
        order = [i.name for i in spec.sockets] + [i.name for i in spec.widgets]
        names = [e.get("name") for e in node.get("inputs", [])]
        if names not in (order, [i.name for i in spec.sockets]):
            errors.append(f"{where}: inputs are {names}, the frontend orders them {order}")
        for entry in node.get("inputs", []):
            inp = spec.input(entry.get("name"))
            if inp is not None and entry.get("type") != inp.type_name:
                errors.append(f"{where}: input {inp.name} has type {entry.get('type')}, the node says {inp.type_name}")
        for inp in spec.sockets:
            if inp.required and not any(e.get("name") == inp.name and e.get("link") is not None
                                        for e in node.get("inputs", [])):
                errors.append(f"{where}: required input {inp.name} ({inp.type_name}) is not connected")
        outs = [(o.get("name"), o.get("type")) for o in node.get("outputs", [])]
        if outs != list(zip(spec.output_names, spec.outputs)):
            errors.append(f"{where}: outputs {outs}, the node has {list(zip(spec.output_names, spec.outputs))}")
    for lid, (_, o, oslot, t, tslot, ltype) in links.items():
        ospec, tnode = specs.get(nodes.get(o, {}).get("type")), nodes.get(t)
        if ospec is None or tnode is None or not 0 <= oslot < len(ospec.outputs):
            continue  # reported above or by the structural checks
        tspec = specs.get(tnode["type"])
        tin = tspec.input(tnode["inputs"][tslot]["name"]) if tspec and tslot < len(tnode.get("inputs", [])) else None
        if ltype != ospec.outputs[oslot] or (tin is not None and not _types_match(ltype, tin.type_name)):
            errors.append(f"link {lid}: {ltype} from output {oslot} ({ospec.outputs[oslot]}) into "
                          f"{tnode['type']}.{tin.name if tin else tslot} ({tin.type_name if tin else '?'})")
    return errors
