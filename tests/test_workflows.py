"""Example workflows, locales and the web extension's preset table, checked against the node classes.

Runs in CI without ComfyUI: the pack is loaded the way ComfyUI loads a custom node folder, and every
file in example_workflows/ is validated against the node classes' INPUT_TYPES / RETURN_TYPES — the
checks POST /prompt makes (API format) and the ones the frontend relies on when it opens a saved
graph (UI format: widgets_values by position, links by slot index).

Generated from the Python source:
  web/presets.json, locales/en/nodeDefs.json   by `python tools/generate.py` (compared here)
  example_workflows/**.json  by `python tests/test_workflows.py --write` (example_workflows/build_examples.py),
                             from INPUT_TYPES defaults (validated here)
locales/de/ is written by hand; the tests below check that it covers every input and output.
"""
from __future__ import annotations

import dataclasses
import importlib
import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
if str(REPO / "tests") not in sys.path:
    sys.path.insert(0, str(REPO / "tests"))

from conftest import load_nodes  # noqa: E402

WORKFLOWS = REPO / "example_workflows"
LOCALES = REPO / "locales"
LANGS = ("en", "de")
PRESETS_JSON = REPO / "web" / "presets.json"
# ComfyUI lists every example_workflows/*.json under Browse Templates and opens it as a graph, so the API
# prompt lives one folder down (opened as a template it would fail with "Workflow does not contain a valid version").
API_PROMPT = "api/train_api.json"
EXPECTED_WORKFLOWS = {"train_from_folder.json": "ui", "train_apply_sample.json": "ui", API_PROMPT: "api"}
ALL_WORKFLOWS = sorted(WORKFLOWS.rglob("*.json"))
# What the workflows name; the test pretends ComfyUI lists them (the user copies the sample dataset
# into ComfyUI/input and has the usual SD 1.5 checkpoint).
SAMPLE_DATASET = "watercolor_fox"
SD15_CHECKPOINT = "v1-5-pruned-emaonly.safetensors"

# Frontend-only nodes: never sent to the server (graphToPrompt skips them).
VIRTUAL_NODES = ("Note", "MarkdownNote")
WIDGET_TYPES = ("INT", "FLOAT", "STRING", "BOOLEAN", "COMBO")
CONTROL_VALUES = ("fixed", "increment", "decrement", "randomize")

# Core nodes the workflows use, in ComfyUI 0.3.64's input order. ComfyUI is absent in CI, so they are
# written down here; tests/e2e/test_browser.py checks this table against a real server's /object_info.
# ("COMBO", {}) is a list that depends on the installation (files, samplers): any non-empty string.
CORE_NODES: dict[str, dict] = {
    "CheckpointLoaderSimple": {"input": {"required": {"ckpt_name": ("COMBO", {})}},
                               "output": ("MODEL", "CLIP", "VAE"), "output_node": False},
    "CLIPTextEncode": {"input": {"required": {"text": ("STRING", {"multiline": True}), "clip": ("CLIP", {})}},
                       "output": ("CONDITIONING",), "output_node": False},
    "EmptyLatentImage": {"input": {"required": {"width": ("INT", {"min": 16, "max": 16384}),
                                                "height": ("INT", {"min": 16, "max": 16384}),
                                                "batch_size": ("INT", {"min": 1, "max": 4096})}},
                         "output": ("LATENT",), "output_node": False},
    "KSampler": {"input": {"required": {"model": ("MODEL", {}), "seed": ("INT", {"min": 0, "max": 2**64 - 1}),
                                        "steps": ("INT", {"min": 1, "max": 10000}),
                                        "cfg": ("FLOAT", {"min": 0.0, "max": 100.0}),
                                        "sampler_name": ("COMBO", {}), "scheduler": ("COMBO", {}),
                                        "positive": ("CONDITIONING", {}), "negative": ("CONDITIONING", {}),
                                        "latent_image": ("LATENT", {}), "denoise": ("FLOAT", {"min": 0.0, "max": 1.0})}},
                 "output": ("LATENT",), "output_node": False},
    "VAEDecode": {"input": {"required": {"samples": ("LATENT", {}), "vae": ("VAE", {})}},
                  "output": ("IMAGE",), "output_node": False},
    "PreviewImage": {"input": {"required": {"images": ("IMAGE", {})}}, "output": (), "output_node": True},
}


# ----------------------------------------------------------------------------------- the node specs


@dataclasses.dataclass
class Input:
    name: str
    type: object  # "INT", "MODEL", ... or a list of combo options
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
    cls: type | None = None  # ours only

    def input(self, name: str) -> Input | None:
        return next((i for i in self.inputs if i.name == name), None)

    @property
    def widgets(self) -> list[Input]:
        return [i for i in self.inputs if i.is_widget]

    @property
    def sockets(self) -> list[Input]:
        return [i for i in self.inputs if not i.is_widget]


def _inputs(input_types: dict) -> list[Input]:
    out = []
    for section in ("required", "optional"):
        for name, spec in (input_types.get(section) or {}).items():
            opts = dict(spec[1]) if len(spec) > 1 else {}
            kind = opts["options"] if spec[0] == "COMBO" and "options" in opts else spec[0]  # V3 combos
            out.append(Input(name, kind, opts, section == "required"))
    return out


def _ours_spec(cls) -> NodeSpec:
    names = getattr(cls, "RETURN_NAMES", None) or cls.RETURN_TYPES
    return NodeSpec(_inputs(cls.INPUT_TYPES()), tuple(cls.RETURN_TYPES), tuple(names),
                    bool(getattr(cls, "OUTPUT_NODE", False)), cls)


@pytest.fixture(scope="module")
def pack_nodes():
    return load_nodes()


def build_registry(pack_nodes, mp: pytest.MonkeyPatch) -> dict[str, NodeSpec]:
    """Every node type the workflows may use. The file-list combos list what a user who followed the
    README has: the sample dataset copied into ComfyUI/input, the usual SD 1.5 checkpoint."""
    configure = importlib.import_module("lora_studio_pack.nodes.configure")
    dataset = importlib.import_module("lora_studio_pack.nodes.dataset")
    mp.setattr(configure, "checkpoint_names", lambda: [SD15_CHECKPOINT])
    mp.setattr(dataset, "input_dir", lambda: REPO / "example_data")
    reg = {k: _ours_spec(cls) for k, cls in pack_nodes.NODE_CLASS_MAPPINGS.items()}
    for name, d in CORE_NODES.items():
        reg[name] = NodeSpec(_inputs(d["input"]), d["output"], d["output"], d["output_node"])
    return reg


@pytest.fixture(scope="module")
def registry(pack_nodes):
    mp = pytest.MonkeyPatch()
    yield build_registry(pack_nodes, mp)
    mp.undo()


def check_value(inp: Input, value) -> str | None:
    """Why a widget value would be rejected (None if it is fine)."""
    t, o = inp.type_name, inp.opts
    if t == "COMBO":
        if isinstance(inp.type, (list, tuple)):
            return None if value in inp.type else f"{value!r} is not one of {list(inp.type)[:8]}"
        return None if isinstance(value, str) and value else f"{value!r} is not a non-empty string"
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


def _own_validate_inputs(cls):
    """The node's own validate_inputs, as ComfyUI finds it (the V3 base class only raises NotImplementedError)."""
    if cls is None:
        return None
    from comfy_api.internal import first_real_override

    return first_real_override(cls, "validate_inputs")


def _types_match(out_type: str, in_type: str) -> bool:
    return out_type == in_type or "*" in (out_type, in_type)


# ----------------------------------------------------------------------------------- API format


def validate_api(prompt: dict, reg: dict[str, NodeSpec]) -> list[str]:
    """The checks POST /prompt makes before it queues anything, for the node types we know."""
    errors: list[str] = []
    if not isinstance(prompt, dict) or not prompt:
        return ["an API prompt is a non-empty object {node_id: {class_type, inputs}}"]
    for nid, node in prompt.items():
        where = f"node {nid}"
        if not isinstance(node, dict) or "class_type" not in node or not isinstance(node.get("inputs"), dict):
            errors.append(f"{where}: needs class_type and an inputs object")
            continue
        spec = reg.get(node["class_type"])
        if spec is None:
            errors.append(f"{where}: unknown class_type {node['class_type']!r}")
            continue
        where = f"node {nid} ({node['class_type']})"
        given = node["inputs"]
        for inp in spec.inputs:
            if inp.required and inp.name not in given:
                errors.append(f"{where}: required input {inp.name!r} is missing")
        literal = {}
        for name, value in given.items():
            inp = spec.input(name)
            if inp is None:
                errors.append(f"{where}: {name!r} is not an input of this node")
                continue
            if isinstance(value, list):  # a link: [origin node id, output index]
                if len(value) != 2 or not isinstance(value[1], int) or str(value[0]) not in prompt:
                    errors.append(f"{where}.{name}: link {value!r} points to no node")
                    continue
                origin = prompt[str(value[0])]
                ospec = reg.get(origin.get("class_type"))
                if ospec is None:
                    continue  # reported on its own
                if not 0 <= value[1] < len(ospec.outputs):
                    errors.append(f"{where}.{name}: {origin['class_type']} has no output {value[1]}")
                elif not _types_match(ospec.outputs[value[1]], inp.type_name):
                    errors.append(f"{where}.{name}: gets {ospec.outputs[value[1]]} but takes {inp.type_name}")
                continue
            if not inp.is_widget:
                errors.append(f"{where}.{name}: a {inp.type_name} input must be linked, not given {value!r}")
                continue
            problem = check_value(inp, value)
            if problem:
                errors.append(f"{where}.{name}: {problem}")
            literal[name] = value
        validate = _own_validate_inputs(spec.cls)
        if validate is not None and not any(e.startswith(where) for e in errors):
            verdict = validate(**literal)
            if verdict is not True:
                errors.append(f"{where}: validate_inputs says {verdict}")
    if not any(reg[n["class_type"]].output_node for n in prompt.values()
               if isinstance(n, dict) and n.get("class_type") in reg):
        errors.append("the prompt has no output node, so ComfyUI would run nothing")
    errors += _cycles({nid: [v[0] for v in n.get("inputs", {}).values() if isinstance(v, list)]
                       for nid, n in prompt.items() if isinstance(n, dict)})
    return errors


def _cycles(deps: dict[str, list]) -> list[str]:
    state: dict[str, int] = {}

    def visit(n: str) -> bool:
        if state.get(n) == 1:
            return True
        if state.get(n) == 2 or n not in deps:
            return False
        state[n] = 1
        if any(visit(str(d)) for d in deps[n]):
            return True
        state[n] = 2
        return False

    return [f"node {n} is part of a cycle" for n in deps if visit(n)][:1]


# ----------------------------------------------------------------------------------- UI format


def expected_widgets(spec: NodeSpec) -> list[tuple[Input, bool]]:
    """(input, is_control_widget) in the order the frontend fills widgets_values."""
    out = []
    for inp in spec.widgets:
        out.append((inp, False))
        if inp.has_control:
            out.append((inp, True))
    return out


def validate_ui(wf: dict, reg: dict[str, NodeSpec]) -> list[str]:
    """What the frontend needs to open the graph as meant: known types, widgets_values in INPUT_TYPES
    order, input/output slots that match the node definitions, and links that agree with both ends."""
    errors: list[str] = []
    if wf.get("version") != 0.4:
        errors.append(f"version is {wf.get('version')!r}, the frontend writes 0.4")
    if "id" in wf and not isinstance(wf["id"], str):
        errors.append("the workflow id must be a string (a UUID); the frontend's schema rejects anything else")
    nodes = {n.get("id"): n for n in wf.get("nodes", [])}
    links = {ln[0]: ln for ln in wf.get("links", [])}
    if len(nodes) != len(wf.get("nodes", [])) or len(links) != len(wf.get("links", [])):
        errors.append("node ids and link ids must be unique")
    if nodes and wf.get("last_node_id", -1) < max(nodes):
        errors.append("last_node_id is lower than a node id")
    if links and wf.get("last_link_id", -1) < max(links):
        errors.append("last_link_id is lower than a link id")
    for nid, node in nodes.items():
        spec = reg.get(node.get("type"))
        where = f"node {nid} ({node.get('type')})"
        if node.get("type") in VIRTUAL_NODES:
            if node.get("inputs") or any(o.get("links") for o in node.get("outputs", [])) or \
                    [type(v) for v in node.get("widgets_values", [])] != [str]:
                errors.append(f"{where}: a note has one text and no connections")
            continue
        if spec is None:
            errors.append(f"{where}: unknown node type")
            continue
        for key in ("pos", "size"):
            if not (isinstance(node.get(key), list) and len(node[key]) == 2):
                errors.append(f"{where}: {key} must be [x, y]")
        if node.get("mode", 0) != 0:
            errors.append(f"{where}: mode {node.get('mode')} (muted/bypassed) in an example")
        errors += _check_widgets(where, spec, node.get("widgets_values", []))
        errors += _check_slots(where, spec, node, links)
    for lid, ln in links.items():
        if len(ln) != 6:
            errors.append(f"link {lid}: expected [id, origin, origin_slot, target, target_slot, type]")
            continue
        _, o, oslot, t, tslot, ltype = ln
        if o not in nodes or t not in nodes:
            errors.append(f"link {lid}: connects missing node {o if o not in nodes else t}")
            continue
        ospec, tspec = reg.get(nodes[o]["type"]), reg.get(nodes[t]["type"])
        if ospec is None or tspec is None:
            continue
        if not 0 <= oslot < len(ospec.outputs):
            errors.append(f"link {lid}: {nodes[o]['type']} has no output {oslot}")
            continue
        tinputs = nodes[t].get("inputs", [])
        if not 0 <= tslot < len(tinputs):
            errors.append(f"link {lid}: {nodes[t]['type']} node {t} has no input slot {tslot}")
            continue
        tin = tspec.input(tinputs[tslot].get("name"))
        if ltype != ospec.outputs[oslot]:
            errors.append(f"link {lid}: type {ltype} but {nodes[o]['type']} output {oslot} is {ospec.outputs[oslot]}")
        if tin is not None and not _types_match(ospec.outputs[oslot], tin.type_name):
            errors.append(f"link {lid}: {ospec.outputs[oslot]} into {nodes[t]['type']}.{tin.name} ({tin.type_name})")
        if tinputs[tslot].get("link") != lid:
            errors.append(f"link {lid}: target slot {nodes[t]['type']}.{tinputs[tslot].get('name')} does not "
                          f"name it (has {tinputs[tslot].get('link')})")
        if lid not in (nodes[o].get("outputs", [{}] * (oslot + 1))[oslot].get("links") or []):
            errors.append(f"link {lid}: origin output {nodes[o]['type']}[{oslot}] does not list it")
    return errors


def _check_widgets(where: str, spec: NodeSpec, values: list) -> list[str]:
    want = expected_widgets(spec)
    names = [("control_after_generate" if c else i.name) for i, c in want]
    if len(values) != len(want):
        return [f"{where}: {len(values)} widgets_values, the node has {len(want)} widgets: {names}"]
    errors = []
    for (inp, control), value in zip(want, values):
        if control:
            if value not in CONTROL_VALUES:
                errors.append(f"{where}: control_after_generate of {inp.name} is {value!r}, not one of {CONTROL_VALUES}")
            continue
        problem = check_value(inp, value)
        if problem:
            errors.append(f"{where}: widget {inp.name}: {problem}")
    return errors


def _check_slots(where: str, spec: NodeSpec, node: dict, links: dict) -> list[str]:
    errors = []
    seen = set()
    names = [e.get("name") for e in node.get("inputs", [])]
    # The frontend re-orders saved inputs into this order when it loads a node (sockets, then widget
    # inputs, each in INPUT_TYPES order); links name slots by index, so the file must use it too.
    order = [i.name for i in spec.sockets] + [i.name for i in spec.widgets]
    if names not in (order, [i.name for i in spec.sockets]):
        errors.append(f"{where}: inputs are {names}, the frontend orders them {order}")
    for slot, entry in enumerate(node.get("inputs", [])):
        inp = spec.input(entry.get("name"))
        if inp is None:
            errors.append(f"{where}: input slot {slot} {entry.get('name')!r} is not an input of this node")
            continue
        seen.add(inp.name)
        if entry.get("type") != inp.type_name:
            errors.append(f"{where}: input {inp.name} has type {entry.get('type')}, the node says {inp.type_name}")
        if ("widget" in entry) != inp.is_widget or (inp.is_widget and entry["widget"].get("name") != inp.name):
            errors.append(f"{where}: input {inp.name}: 'widget' must be {{'name': {inp.name!r}}} exactly for widget inputs")
        lid = entry.get("link")
        if lid is not None and (lid not in links or links[lid][3] != node["id"] or links[lid][4] != slot):
            errors.append(f"{where}: input {inp.name} names link {lid}, which does not end at this slot")
    for inp in spec.sockets:
        if inp.required and inp.name not in seen:
            errors.append(f"{where}: required input {inp.name} ({inp.type_name}) has no slot")
        linked = any(e.get("name") == inp.name and e.get("link") is not None for e in node.get("inputs", []))
        if inp.required and not linked:
            errors.append(f"{where}: required input {inp.name} ({inp.type_name}) is not connected")
    outs = node.get("outputs", [])
    if len(outs) != len(spec.outputs):
        errors.append(f"{where}: {len(outs)} outputs, the node has {len(spec.outputs)}")
    for i, (entry, otype, oname) in enumerate(zip(outs, spec.outputs, spec.output_names)):
        if entry.get("type") != otype or entry.get("name") != oname:
            errors.append(f"{where}: output {i} is {entry.get('name')}:{entry.get('type')}, the node says {oname}:{otype}")
        for lid in entry.get("links") or []:
            if lid not in links or links[lid][1] != node["id"] or links[lid][2] != i:
                errors.append(f"{where}: output {i} lists link {lid}, which does not start here")
    return errors


def ui_to_api(wf: dict, reg: dict[str, NodeSpec]) -> dict:
    """The API prompt the frontend's graphToPrompt makes from a UI workflow (without _meta)."""
    links = {ln[0]: ln for ln in wf["links"]}
    prompt = {}
    for node in sorted(wf["nodes"], key=lambda n: n["id"]):
        if node["type"] in VIRTUAL_NODES:
            continue
        spec = reg[node["type"]]
        inputs = {}
        for (inp, control), value in zip(expected_widgets(spec), node.get("widgets_values", [])):
            if not control:
                inputs[inp.name] = value
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


# ----------------------------------------------------------------------------------- generated files


def _generator():
    spec = importlib.util.spec_from_file_location("lora_studio_generate", REPO / "tools" / "generate.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def presets_json() -> dict:
    return _generator().presets_json()


def dump_json(data) -> str:
    return json.dumps(data, indent=2, ensure_ascii=False) + "\n"


def write_generated() -> None:
    nodes = load_nodes()
    spec = importlib.util.spec_from_file_location("build_examples", WORKFLOWS / "build_examples.py")
    build = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(build)
    mp = pytest.MonkeyPatch()
    try:
        written = build.write_all(build_registry(nodes, mp), nodes.NODE_DISPLAY_NAME_MAPPINGS, ui_to_api, dump_json)
    finally:
        mp.undo()
    for path in written:
        print(f"wrote {path.relative_to(REPO)}")


REGENERATE = "regenerate with `python tools/generate.py`"


def _read(path: Path):
    return json.loads(path.read_text(encoding="utf-8"))


# ----------------------------------------------------------------------------------- tests: generated files


def test_presets_json_is_current():
    """web/presets.json is what tools/generate.py makes from trainer/presets.py and trainer/config.py."""
    assert [p.relative_to(REPO).as_posix() for p in _generator().stale()] == [], REGENERATE


def test_english_node_defs_are_current(pack_nodes):
    """locales/en/nodeDefs.json is what tools/generate.py makes from the node schemas."""
    gen = _generator()
    assert [p.relative_to(REPO).as_posix() for p in gen.stale(pack_nodes)] == [], REGENERATE


def test_the_drift_check_can_fail(monkeypatch):
    gen = _generator()
    monkeypatch.setattr(gen, "presets_json", lambda: {"presets": {}})
    assert gen.PRESETS_JSON in gen.stale()


def test_configure_widgets_follow_the_field_definitions(pack_nodes):
    config = importlib.import_module("lora_studio_pack.trainer.config")
    opts = pack_nodes.ConfigureLoRA.INPUT_TYPES()["optional"]
    for name in ("resolution", "rank", "learning_rate", "train_batch_size", "num_class_images"):
        assert opts[name][1]["max"] == config.spec(name).hi, name
        assert opts[name][1]["tooltip"].startswith(config.spec(name).help), name
    assert opts["lr_scheduler"][1]["options"][1:] == list(config.SCHEDULERS)
    assert opts["seed"][1]["max"] == config.SEED_MAX


# ----------------------------------------------------------------------------------- tests: locales


@pytest.mark.parametrize("lang", LANGS)
def test_every_node_input_and_output_is_translated(pack_nodes, lang):
    defs = _read(LOCALES / lang / "nodeDefs.json")
    assert set(defs) == set(pack_nodes.NODE_CLASS_MAPPINGS), "nodeDefs.json must list exactly our nodes"
    for node_id, cls in pack_nodes.NODE_CLASS_MAPPINGS.items():
        d = defs[node_id]
        for key in ("display_name", "description"):
            assert isinstance(d.get(key), str) and d[key].strip(), f"{lang}: {node_id}.{key} is missing"
        inputs = _inputs(cls.INPUT_TYPES())
        have, want = set(d.get("inputs", {})), {i.name for i in inputs}
        assert have == want, f"locales/{lang}/nodeDefs.json {node_id}: inputs missing {sorted(want - have)}, " \
                             f"not in INPUT_TYPES {sorted(have - want)}"
        for inp in inputs:
            entry = d["inputs"][inp.name]
            assert entry.get("name", "").strip(), f"{lang}: {node_id}.inputs.{inp.name}.name is missing"
            assert entry.get("tooltip", "").strip(), f"{lang}: {node_id}.inputs.{inp.name}.tooltip is missing"
        n_out = len(cls.RETURN_TYPES)
        assert set(d.get("outputs", {})) == {str(i) for i in range(n_out)}, \
            f"{lang}: {node_id} outputs must be keyed '0'..'{n_out - 1}' (the frontend looks them up by index)"
        for i in range(n_out):
            entry = d["outputs"][str(i)]
            assert entry.get("name", "").strip() and entry.get("tooltip", "").strip(), \
                f"{lang}: {node_id}.outputs.{i} needs name and tooltip"


def test_every_python_input_has_a_tooltip_and_every_node_a_description(pack_nodes):
    for node_id, cls in pack_nodes.NODE_CLASS_MAPPINGS.items():
        assert getattr(cls, "DESCRIPTION", "").strip(), node_id
        assert len(getattr(cls, "OUTPUT_TOOLTIPS", ())) == len(cls.RETURN_TYPES), node_id
        for inp in _inputs(cls.INPUT_TYPES()):
            assert inp.opts.get("tooltip", "").strip(), f"{node_id}.{inp.name} has no tooltip"


def test_german_keeps_the_preset_titles_as_the_guide_writes_them():
    de = _read(LOCALES / "de" / "nodeDefs.json")["LoraStudio_ConfigureLoRA"]["inputs"]["preset"]["tooltip"]
    for p in presets_json()["presets"].values():
        assert p["title"] in de, f"the German preset tooltip must name {p['title']!r}"


def test_main_json_has_the_same_keys_in_every_language():
    def keys(d, prefix=""):
        return {prefix + k for k, v in d.items() if not isinstance(v, dict)} | \
            {x for k, v in d.items() if isinstance(v, dict) for x in keys(v, prefix + k + ".")}

    en = keys(_read(LOCALES / "en" / "main.json"))
    assert en, "locales/en/main.json is empty"
    for lang in LANGS:
        assert keys(_read(LOCALES / lang / "main.json")) == en, f"locales/{lang}/main.json keys differ from en"


# ----------------------------------------------------------------------------------- tests: workflows


def test_the_example_workflows_are_there():
    assert {p.relative_to(WORKFLOWS).as_posix() for p in ALL_WORKFLOWS} == set(EXPECTED_WORKFLOWS)


def test_templates_are_graphs():
    """Only UI-format graphs at the top level: those are what Browse Templates offers."""
    for path in WORKFLOWS.glob("*.json"):
        assert _kind(path, _read(path)) == "ui", f"{path.name}: an API prompt here breaks Browse Templates"


def _kind(path: Path, data) -> str:
    return "ui" if isinstance(data, dict) and "nodes" in data and "links" in data else "api"


@pytest.mark.parametrize("path", ALL_WORKFLOWS, ids=lambda p: p.relative_to(WORKFLOWS).as_posix())
def test_workflow_is_valid(path, registry):
    data = _read(path)
    kind = _kind(path, data)
    rel = path.relative_to(WORKFLOWS).as_posix()
    assert kind == EXPECTED_WORKFLOWS.get(rel, kind), f"{rel} should be in {EXPECTED_WORKFLOWS[rel]} format"
    if kind == "api":
        errors = validate_api(data, registry)
    else:
        errors = validate_ui(data, registry)
        errors += [f"as API prompt: {e}" for e in validate_api(ui_to_api(data, registry), registry)]
    assert not errors, f"{path.name}:\n  " + "\n  ".join(errors)


def test_api_workflow_is_the_same_job_as_the_ui_workflow(registry):
    ui = ui_to_api(_read(WORKFLOWS / "train_from_folder.json"), registry)
    api = strip_meta(_read(WORKFLOWS / API_PROMPT))
    assert api == ui, f"{API_PROMPT} must be what 'Export (API)' makes of train_from_folder.json"


def test_workflows_use_the_sample_dataset_and_the_sd15_checkpoint(registry):
    for name in ("train_from_folder.json", "train_apply_sample.json"):
        prompt = ui_to_api(_read(WORKFLOWS / name), registry)
        by_type = {n["class_type"]: n["inputs"] for n in prompt.values()}
        assert by_type["LoraStudio_LoadDataset"]["dataset"] == SAMPLE_DATASET
        assert (REPO / "example_data" / SAMPLE_DATASET / "metadata.jsonl").is_file()
        assert by_type["LoraStudio_ConfigureLoRA"]["ckpt_name"] == SD15_CHECKPOINT
        assert by_type["LoraStudio_ConfigureLoRA"]["seed"] == 42


def test_sample_workflow_prompts_with_the_trigger_token_through_the_trained_model(registry):
    prompt = ui_to_api(_read(WORKFLOWS / "train_apply_sample.json"), registry)
    ids = {n["class_type"]: k for k, n in prompt.items()}
    trigger = prompt[ids["LoraStudio_LoadDataset"]]["inputs"]["trigger_token"]
    train = ids["LoraStudio_TrainLoRA"]
    loader = ids["CheckpointLoaderSimple"]
    assert prompt[train]["inputs"]["model"] == [loader, 0] and prompt[train]["inputs"]["clip"] == [loader, 1]
    assert prompt[ids["KSampler"]]["inputs"]["model"] == [train, 1], "sample with the MODEL that has the LoRA"
    positive = prompt[ids["KSampler"]]["inputs"]["positive"][0]
    assert prompt[positive]["inputs"]["clip"] == [train, 2], "encode the prompt with the CLIP that has the LoRA"
    assert trigger and trigger in prompt[positive]["inputs"]["text"], "the positive prompt must use the trigger token"
    assert any(n["class_type"] == "LoraStudio_SaveLoRAToModels" and n["inputs"]["lora"] == [train, 0]
               for n in prompt.values())


def test_validator_catches_broken_workflows(registry):
    """The checks above would notice the usual ways a workflow rots."""
    wf = _read(WORKFLOWS / "train_from_folder.json")
    assert not validate_ui(wf, registry)
    configure = next(n for n in wf["nodes"] if n["type"] == "LoraStudio_ConfigureLoRA")
    bad = json.loads(json.dumps(wf))
    next(n for n in bad["nodes"] if n["id"] == configure["id"])["widgets_values"].pop()
    assert any("widgets_values" in e for e in validate_ui(bad, registry))
    bad = json.loads(json.dumps(wf))
    bad["links"][0][5] = "IMAGE"
    assert any(e.startswith("link ") for e in validate_ui(bad, registry))
    api = _read(WORKFLOWS / API_PROMPT)
    cid = next(k for k, n in api.items() if n["class_type"] == "LoraStudio_ConfigureLoRA")
    for change, needle in ((lambda p: p[cid]["inputs"].update(preset="Studio"), "not one of"),
                           (lambda p: p[cid]["inputs"].update(resolution=64), "validate_inputs"),
                           (lambda p: p[cid]["inputs"].pop("ckpt_name"), "missing"),
                           (lambda p: p[next(k for k, n in p.items() if n["class_type"] == "LoraStudio_TrainLoRA")]
                            ["inputs"].update(config=[cid, 1]), "takes")):
        broken = json.loads(json.dumps(api))
        change(broken)
        assert any(needle in e for e in validate_api(broken, registry)), needle


# ----------------------------------------------------------------------------------- tests: the web extension


def test_web_extension_names_our_nodes_and_event(pack_nodes):
    js = (REPO / "web" / "lora_studio.js").read_text(encoding="utf-8")
    for node_id in ("LoraStudio_TrainLoRA", "LoraStudio_ConfigureLoRA"):
        assert f'"{node_id}"' in js and node_id in pack_nodes.NODE_CLASS_MAPPINGS
    bridge = importlib.import_module("lora_studio_pack.nodes.comfy_bridge")
    assert f'"{bridge.LOSS_EVENT}"' in js


NODE_MISSING = pytest.mark.skipif(shutil.which("node") is None, reason="Node.js is not installed: the web/ JS is not run")


def _as_modules(tmp_path: Path) -> dict[str, Path]:
    """web/*.js as .mjs copies: Node.js 20 treats .js without a package.json as CommonJS."""
    out = {}
    for js in (REPO / "web").glob("*.js"):
        out[js.stem] = tmp_path / (js.stem + ".mjs")
        out[js.stem].write_text(js.read_text(encoding="utf-8").replace('.js";', '.mjs";'), encoding="utf-8")
    return out


@NODE_MISSING
def test_web_helpers_in_node(tmp_path):
    """The chart maths and the preset panel's values, run in Node.js (no browser, no ComfyUI)."""
    mods = _as_modules(tmp_path)
    code = f"""
import {{ addLossPoint, newLossState, setLossHistory, smoothLosses, formatEta, matchesNode, chartCaption }} from "{mods['lora_studio_chart'].as_uri()}";
import {{ findPreset, overriddenWidgets, panelRows, widgetUpdates, DEFAULT_STRINGS }} from "{mods['lora_studio_panel'].as_uri()}";
import fs from "node:fs";
const ok = (c, m) => {{ if (!c) {{ console.error("FAIL: " + m); process.exit(1); }} }};
const s = newLossState();
const pts = s.points;
for (const [step, loss] of [[1, 1.0], [2, 0.5], [3, 0.25]]) addLossPoint(s, {{step, total: 3, loss, lr: 1e-4, eta_s: 3 - step}});
ok(s.points.length === 3 && s.total === 3 && s.eta_s === 0, "three points");
ok(chartCaption(s, DEFAULT_STRINGS.chart).startsWith("step 3/3 · loss 0.2500"), chartCaption(s, DEFAULT_STRINGS.chart));
addLossPoint(s, {{step: 1, total: 5, loss: 2.0, lr: 1e-4, eta_s: 9}});
ok(s.points.length === 1 && s.points[0].loss === 2.0 && s.total === 5, "a new run (step 1) clears the chart");
ok(s.points === pts, "cleared in place, so node.lossPoints stays the live array");
addLossPoint(s, {{step: 2, total: 5, loss: NaN, lr: 1e-4, eta_s: 8}});
ok(s.points.length === 2 && s.nonFinite === 1, "NaN loss is kept but counted");
setLossHistory(s, [0.5, 0.4, "NaN"]);
ok(s.points === pts && s.points.length === 3 && s.points[2].step === 3 && s.total === 3 && s.nonFinite === 1, "history");
addLossPoint(s, {{step: 4, total: 6, loss: 0.3, lr: 1e-4, eta_s: 2}});
ok(s.points.length === 4, "a resumed run (step 4 after 3) continues the chart");
ok(smoothLosses([1, 1, 1, 1], 0.9).every(v => Math.abs(v - 1) < 1e-12), "debiased EMA of a constant is that constant");
ok(smoothLosses([0, 10], 0.0)[1] === 10, "weight 0 = no smoothing");
ok(formatEta(59) === "0:59" && formatEta(3600 + 61) === "1:01:01", "ETA format like the node's text");
ok(matchesNode("12", 12) && matchesNode("5:12", 12) && !matchesNode("3", 12) && !matchesNode(null, 1), "node ids");
const presets = JSON.parse(fs.readFileSync("{PRESETS_JSON.as_posix()}", "utf8"));
const p = findPreset(presets, "Atelier – Detailtreue");
const kinds = presets.widgets;
ok(p && p.key === "atelier", "preset by title");
ok(findPreset(presets, "galerie").key === "galerie" && findPreset(presets, "nope") === null, "preset by key");
const shown = presets.widget_values.atelier;
ok(shown.rank === 32 && shown.lr_scheduler === "cosine" && shown.train_text_encoder === "off", "atelier's widget values");
const old = {{preset: p.title, resolution: 0, rank: 16, train_text_encoder: "on", lr_scheduler: "preset", seed: 7}};
const up = widgetUpdates(presets, "atelier", old);
ok(up.resolution === 512 && up.lr_scheduler === "cosine" && !("rank" in up) && !("train_text_encoder" in up)
   && !("seed" in up), "0 / 'preset' of older workflows become the preset's value; set values stay: " + JSON.stringify(up));
const galerie = widgetUpdates(presets, "galerie", {{...shown, rank: 16, seed: 7}}, true);
ok(galerie.resolution === 640 && galerie.rank === 32 && galerie.train_text_encoder === "on" && !("seed" in galerie),
   "a new preset sets the widgets of the fields it defines: " + JSON.stringify(galerie));
ok(JSON.stringify(overriddenWidgets(presets, "atelier", {{...shown, rank: 16, learning_rate: 5e-5}})) === '["rank"]',
   "only a value that differs from the preset's is an override");
ok(overriddenWidgets(presets, "atelier", {{...shown, resolution: 0, lr_scheduler: "preset"}}).length === 0, "0 / preset are none");
const rows = Object.fromEntries(panelRows(p, {{overrides: {{rank: {{value: 16, preset: 32}}, noise_offset: {{value: 0.05, preset: 0}}}}}})
  .map((x) => [x.field, x]));
ok(rows.rank.value === 16 && rows.rank.overridden && rows.rank.preset === 32 && !rows.resolution.overridden, "rows");
ok(rows.noise_offset.overridden && rows.noise_offset.preset === 0, "settings the preset leaves alone");
ok(panelRows(p, null).every((x) => !x.overridden), "the preset as it is while the server's answer is on its way");
const en = JSON.parse(fs.readFileSync("{(LOCALES / 'en' / 'main.json').as_posix()}", "utf8")).loraStudio;
ok(JSON.stringify(en) === JSON.stringify(DEFAULT_STRINGS), "DEFAULT_STRINGS in lora_studio_panel.js = locales/en/main.json");
console.log("ok");
"""
    r = subprocess.run(["node", "--input-type=module", "-e", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and r.stdout.strip().endswith("ok"), r.stdout + r.stderr


@NODE_MISSING
def test_web_js_parses(tmp_path):
    for name, path in _as_modules(tmp_path).items():
        r = subprocess.run(["node", "--check", str(path)], capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, f"web/{name}.js: {r.stderr}"


if __name__ == "__main__":
    if sys.argv[1:] == ["--write"]:
        write_generated()
    else:
        sys.exit("usage: python tests/test_workflows.py --write   (regenerates example_workflows/*.json from the "
                 "node classes; web/presets.json and locales/en/nodeDefs.json: python tools/generate.py)")
