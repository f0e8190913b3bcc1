"""Example workflows, locales and the web extension's preset table, checked offline (no server).

The example workflows are checked here only for what needs no node table of ComfyUI's core: well-formed
JSON, ids, links that agree at both ends, notes, thumbnails, and our own nodes' widget values against our
node classes. Against the real ComfyUI's /object_info (every node type, input name, type, range and choice,
the API prompt the frontend makes of them) they are checked in tests/e2e/test_workflows_server.py.

Generated from the Python source by tools/generate.py: web/presets.json, locales/en/nodeDefs.json (compared
here) and, with --examples, example_workflows/**.json (compared with the real server's definitions in e2e).
locales/de/ is written by hand; the tests below check that it covers every input and output.
"""
from __future__ import annotations

import hashlib
import importlib
import importlib.util
import io
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
if str(REPO / "tests") not in sys.path:
    sys.path.insert(0, str(REPO / "tests"))
if str(REPO / "tools") not in sys.path:
    sys.path.insert(0, str(REPO / "tools"))

import workflows as wfs  # noqa: E402  (tools/workflows.py)
from conftest import load_nodes  # noqa: E402

WORKFLOWS = wfs.WORKFLOWS
LOCALES = REPO / "locales"
LANGS = ("en", "de")
PRESETS_JSON = REPO / "web" / "presets.json"
ALL_WORKFLOWS = sorted(WORKFLOWS.rglob("*.json"))


@pytest.fixture(scope="module")
def pack_nodes():
    return load_nodes()


def _inputs(input_types: dict) -> list:
    return wfs.NodeSpec.of({"input": input_types, "output": []}).inputs


def _generator():
    spec = importlib.util.spec_from_file_location("lora_studio_generate", REPO / "tools" / "generate.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def presets_json() -> dict:
    return _generator().presets_json()


def dump_json(data) -> str:
    return json.dumps(data, indent=2, ensure_ascii=False) + "\n"


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


def _kind(data) -> str:
    return "ui" if isinstance(data, dict) and "nodes" in data and "links" in data else "api"


def test_the_example_workflows_are_there():
    assert {p.relative_to(WORKFLOWS).as_posix() for p in ALL_WORKFLOWS} == {*wfs.TEMPLATES, wfs.API_PROMPT}
    assert not list(WORKFLOWS.glob("*.py")), "ComfyUI serves this folder as it is: no scripts in it"


def test_templates_are_graphs_and_the_api_prompt_is_one_folder_down():
    """Only UI-format graphs at the top level: those are what Browse Templates offers."""
    for path in WORKFLOWS.glob("*.json"):
        assert _kind(_read(path)) == "ui", f"{path.name}: an API prompt here breaks Browse Templates"
    assert _kind(_read(WORKFLOWS / wfs.API_PROMPT)) == "api"


def test_every_template_has_its_own_thumbnail():
    """ComfyUI's frontends show <name>.jpg beside <name>.json; one picture for all says nothing."""
    from PIL import Image

    digests = set()
    for name in wfs.TEMPLATES:
        jpg = (WORKFLOWS / name).with_suffix(".jpg")
        assert jpg.is_file(), f"{jpg.name} is missing: the template browser would show a broken picture"
        data = jpg.read_bytes()
        with Image.open(io.BytesIO(data)) as im:
            assert im.format == "JPEG" and min(im.size) >= 256, (jpg.name, im.format, im.size)
            im.load()
        digests.add(hashlib.sha256(data).hexdigest())
    assert len(digests) == len(wfs.TEMPLATES), "two templates share one thumbnail"


def structure_problems(wf: dict) -> list[str]:
    """What the frontend needs of any saved graph, whatever its nodes: ids, links that agree at both ends."""
    errors: list[str] = []
    if wf.get("version") != 0.4:
        errors.append(f"version is {wf.get('version')!r}, the frontend writes 0.4")
    if not isinstance(wf.get("id"), str):
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
        where = f"node {nid} ({node.get('type')})"
        for key in ("pos", "size"):
            if not (isinstance(node.get(key), list) and len(node[key]) == 2):
                errors.append(f"{where}: {key} must be [x, y]")
        if node.get("mode", 0) != 0:
            errors.append(f"{where}: mode {node.get('mode')} (muted/bypassed) in an example")
        if node.get("type") in wfs.VIRTUAL_NODES and (node.get("inputs") or node.get("outputs") or
                                                      [type(v) for v in node.get("widgets_values", [])] != [str]):
            errors.append(f"{where}: a note has one text and no connections")
        for slot, entry in enumerate(node.get("inputs", [])):
            lid = entry.get("link")
            if lid is not None and (lid not in links or links[lid][3] != nid or links[lid][4] != slot):
                errors.append(f"{where}: input {entry.get('name')} names link {lid}, which does not end at this slot")
        for i, entry in enumerate(node.get("outputs", [])):
            for lid in entry.get("links") or []:
                if lid not in links or links[lid][1] != nid or links[lid][2] != i:
                    errors.append(f"{where}: output {i} lists link {lid}, which does not start here")
    for lid, ln in links.items():
        if len(ln) != 6:
            errors.append(f"link {lid}: expected [id, origin, origin_slot, target, target_slot, type]")
            continue
        _, o, oslot, t, tslot, ltype = ln
        if o not in nodes or t not in nodes:
            errors.append(f"link {lid}: connects missing node {o if o not in nodes else t}")
            continue
        outs, ins = nodes[o].get("outputs", []), nodes[t].get("inputs", [])
        if not (0 <= oslot < len(outs) and lid in (outs[oslot].get("links") or [])):
            errors.append(f"link {lid}: origin output {nodes[o]['type']}[{oslot}] does not list it")
        elif outs[oslot].get("type") != ltype:
            errors.append(f"link {lid}: type {ltype}, its origin output says {outs[oslot].get('type')}")
        if not (0 <= tslot < len(ins) and ins[tslot].get("link") == lid):
            errors.append(f"link {lid}: target {nodes[t]['type']} slot {tslot} does not name it")
    return errors


@pytest.mark.parametrize("name", wfs.TEMPLATES)
def test_template_structure(name):
    assert structure_problems(_read(WORKFLOWS / name)) == []


def test_the_structure_check_can_fail():
    wf = _read(WORKFLOWS / wfs.FROM_FOLDER)
    for change, needle in ((lambda w: w["links"][0].__setitem__(5, "IMAGE"), "type IMAGE"),
                           (lambda w: w["links"].pop(), "does not end at this slot"),
                           (lambda w: w["nodes"].append(dict(w["nodes"][0])), "unique"),
                           (lambda w: w.update(id=7), "UUID")):
        broken = json.loads(json.dumps(wf))
        change(broken)
        assert any(needle in e for e in structure_problems(broken)), needle


def test_api_prompt_structure():
    prompt = _read(WORKFLOWS / wfs.API_PROMPT)
    for nid, node in prompt.items():
        assert isinstance(node.get("class_type"), str) and isinstance(node.get("inputs"), dict), nid
        assert node.get("_meta", {}).get("title"), f"node {nid}: Export (API) writes the node's title in _meta"
        for name, value in node["inputs"].items():
            if isinstance(value, list):
                assert len(value) == 2 and str(value[0]) in prompt and isinstance(value[1], int), (nid, name, value)


def _our_specs(pack_nodes) -> dict:
    return {k: wfs.NodeSpec.of(wfs.spec_from_class(c)) for k, c in pack_nodes.NODE_CLASS_MAPPINGS.items()}


# Combos whose options are the server's files: a README user has the sample dataset; the checkpoint is
# theirs to pick (left empty in the examples).
FILE_LISTS = ("dataset", "ckpt_name")


def test_our_nodes_in_the_examples_match_our_node_classes(pack_nodes):
    """Widget values, slots and outputs of OUR nodes (core nodes: e2e, against the real server)."""
    specs = _our_specs(pack_nodes)
    for name in wfs.TEMPLATES:
        wf = _read(WORKFLOWS / name)
        ours = {**wf, "nodes": [n for n in wf["nodes"] if n["type"] in specs or n["type"] in wfs.VIRTUAL_NODES]}
        assert wfs.validate_ui(ours, specs, skip_values=FILE_LISTS) == [], name
        for node in ours["nodes"]:
            if node["type"] in specs:
                values = wfs.widget_values(node, specs[node["type"]])
                if "dataset" in values:
                    assert values["dataset"] == wfs.SAMPLE_DATASET
                    assert (REPO / "example_data" / wfs.SAMPLE_DATASET / "metadata.jsonl").is_file()
                if "ckpt_name" in values:
                    assert values["ckpt_name"] == "", "a checkpoint name in a template is 'missing' on most servers"
                    assert values["seed"] == 42


def test_the_api_prompt_is_export_api_of_the_first_template(pack_nodes):
    ui = wfs.ui_to_api(_read(WORKFLOWS / wfs.FROM_FOLDER), _our_specs(pack_nodes))
    assert wfs.strip_meta(_read(WORKFLOWS / wfs.API_PROMPT)) == ui


def test_the_notes_tell_the_user_to_pick_a_checkpoint():
    for name in wfs.TEMPLATES:
        notes = [n["widgets_values"][0] for n in _read(WORKFLOWS / name)["nodes"] if n["type"] == "Note"]
        assert len(notes) == 1 and "pick your checkpoint" in notes[0] and "Wähle dein Checkpoint" in notes[0], name


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
    sys.exit("the example workflows are written by `python tools/generate.py --examples`; "
             "web/presets.json and locales/en/nodeDefs.json by `python tools/generate.py`")
