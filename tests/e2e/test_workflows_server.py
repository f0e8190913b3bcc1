"""The example workflows against the real ComfyUI's node definitions (/object_info): every node type exists,
every widget value and input matches its input's name, type, range and choices, every link's type fits both
ends, the API example is what the frontend's Export (API) makes of the first template, and the files are
what tools/workflows.py builds from this server's definitions (so no table of core nodes is kept anywhere).

The server has what a user who followed the README has: the sample dataset in its input folder and a
checkpoint. The templates leave ckpt_name empty on purpose (a named file would be "missing" on most servers);
that one value is checked to be empty, and POST /prompt answers it with the node's own "pick" message.
"""
from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tools"))
import workflows as wfs  # noqa: E402  (tools/workflows.py)

pytestmark = pytest.mark.e2e
PICKED_BY_THE_USER = ("ckpt_name",)


@pytest.fixture(scope="module")
def server(comfy_server, sd15_checkpoint):
    dst = comfy_server.input_dir / wfs.SAMPLE_DATASET
    if not dst.exists():
        shutil.copytree(REPO / "example_data" / wfs.SAMPLE_DATASET, dst)
    return comfy_server


@pytest.fixture(scope="module")
def info(server) -> dict:
    return server.object_info()


@pytest.fixture(scope="module")
def specs(info) -> dict:
    return wfs.specs_of(info)


def _read(rel: str):
    return json.loads((wfs.WORKFLOWS / rel).read_text(encoding="utf-8"))


@pytest.mark.parametrize("name", wfs.TEMPLATES)
def test_template_matches_the_servers_node_definitions(name, specs):
    wf = _read(name)
    assert wfs.validate_ui(wf, specs, skip_values=PICKED_BY_THE_USER) == []
    prompt = wfs.ui_to_api(wf, specs)
    assert wfs.validate_api(prompt, specs, skip_values=PICKED_BY_THE_USER) == []
    picked = [node["inputs"][k] for node in prompt.values() for k in PICKED_BY_THE_USER if k in node["inputs"]]
    assert picked and set(picked) == {""}, f"{name}: the checkpoint is the user's to pick: {picked}"


def test_api_example_matches_the_server_and_the_first_template(specs, info):
    api = _read(wfs.API_PROMPT)
    assert wfs.validate_api(api, specs, skip_values=PICKED_BY_THE_USER) == []
    assert wfs.strip_meta(api) == wfs.ui_to_api(_read(wfs.FROM_FOLDER), specs), \
        f"{wfs.API_PROMPT} must be what Export (API) makes of {wfs.FROM_FOLDER}"
    for node in api.values():
        assert node["_meta"]["title"] == info[node["class_type"]]["display_name"]


def test_the_files_are_what_the_builder_makes_of_the_servers_definitions(specs, info):
    titles = {k: v["display_name"] for k, v in info.items()}
    built = wfs.build_all(specs, titles)
    stale = [rel for rel, data in built.items() if data != _read(rel)]
    assert stale == [], f"stale: {stale}; regenerate with `python tools/generate.py --examples` (see its docstring)"


def test_sample_workflow_prompts_with_the_trigger_token_through_the_trained_model(specs):
    prompt = wfs.ui_to_api(_read(wfs.TRAIN_AND_SAMPLE), specs)
    ids = {n["class_type"]: k for k, n in prompt.items()}
    trigger = prompt[ids["LoraStudio_LoadDataset"]]["inputs"]["trigger_token"]
    train, loader = ids["LoraStudio_TrainLoRA"], ids["CheckpointLoaderSimple"]
    assert prompt[train]["inputs"]["model"] == [loader, 0] and prompt[train]["inputs"]["clip"] == [loader, 1]
    assert prompt[ids["KSampler"]]["inputs"]["model"] == [train, 1], "sample with the MODEL that has the LoRA"
    positive = prompt[ids["KSampler"]]["inputs"]["positive"][0]
    assert prompt[positive]["inputs"]["clip"] == [train, 2], "encode the prompt with the CLIP that has the LoRA"
    assert trigger and trigger in prompt[positive]["inputs"]["text"], "the positive prompt must use the trigger token"
    assert any(n["class_type"] == "LoraStudio_SaveLoRAToModels" and n["inputs"]["lora"] == [train, 0]
               for n in prompt.values())


def test_the_server_check_can_fail(specs):
    wf = _read(wfs.TRAIN_AND_SAMPLE)
    by_type = {n["type"]: i for i, n in enumerate(wf["nodes"])}

    def widget(w, type_, value, index):
        w["nodes"][by_type[type_]]["widgets_values"][index] = value

    for change, needle in (
            (lambda w: w["nodes"][by_type["KSampler"]].update(type="KSamplerX"), "unknown node type"),
            (lambda w: widget(w, "KSampler", "no_such_sampler", 4), "is not one of"),
            (lambda w: widget(w, "EmptyLatentImage", 8, 0), "outside"),
            (lambda w: widget(w, "LoraStudio_ConfigureLoRA", "Studio", 1), "is not one of"),
            (lambda w: widget(w, "LoraStudio_LoadDataset", "not_in_input", 0), "is not one of"),
            (lambda w: w["nodes"][by_type["KSampler"]]["widgets_values"].pop(), "widgets_values"),
            (lambda w: w["links"][0].__setitem__(5, "IMAGE"), "link 1")):
        broken = json.loads(json.dumps(wf))
        change(broken)
        assert any(needle in e for e in wfs.validate_ui(broken, specs, skip_values=PICKED_BY_THE_USER)), needle
    api = _read(wfs.API_PROMPT)
    cid = next(k for k, n in api.items() if n["class_type"] == "LoraStudio_ConfigureLoRA")
    tid = next(k for k, n in api.items() if n["class_type"] == "LoraStudio_TrainLoRA")
    for change, needle in ((lambda p: p[cid]["inputs"].pop("preset"), "missing"),
                           (lambda p: p[cid]["inputs"].update(bogus=1), "not an input"),
                           (lambda p: p[tid]["inputs"].update(config=[cid, 1]), "takes")):
        broken = json.loads(json.dumps(api))
        change(broken)
        assert any(needle in e for e in wfs.validate_api(broken, specs)), needle


def test_the_server_asks_for_the_checkpoint_the_template_leaves_empty(server):
    """POST /prompt with the API example as it is: refused, nothing queued, the node's own message."""
    r = server.post("/prompt", json={"prompt": _read(wfs.API_PROMPT), "client_id": server.client_id})
    assert r.status_code == 400, r.text
    errors = json.dumps(r.json().get("node_errors"))
    assert "pick your base model" in errors, r.text
