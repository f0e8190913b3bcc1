"""Writes the files derived from the Python source, or checks that they are current.

    python tools/generate.py            # write them
    python tools/generate.py --check    # exit 1 and name the stale files (what the tests run)

  web/presets.json          trainer.presets.web_table(): the presets, Configure LoRA's widget kinds and every
                            config field's definition (trainer/config.py), for the preset panel's JS
  locales/en/nodeDefs.json  node names, descriptions and tooltips exactly as the node classes give them (the
                            config inputs' tooltips come from the field definitions)
  example_workflows/**.json the example workflows (tools/workflows.py) from the node definitions of our nodes
                            and ComfyUI's own: written only, with --examples (importing ComfyUI's nodes.py takes
                            a while); tests/e2e/test_workflows_server.py checks them against a real server
locales/de/ is written by hand; tests/test_workflows.py checks that it covers every input and output.

The node schemas are ComfyUI V3 (`comfy_api`): writing nodeDefs.json needs COMFYUI_PATH set to a ComfyUI
tree and the Python that runs it, e.g.
    COMFYUI_PATH=../ComfyUI ../ComfyUI/venv/bin/python tools/generate.py
Without them only web/presets.json is written (and checked).
    COMFYUI_PATH=../ComfyUI ../ComfyUI/venv/bin/python tools/generate.py --examples   # also the examples
"""
from __future__ import annotations

import importlib
import importlib.util
import json
import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGE = "lora_studio_pack"  # the name the repo is imported under, as ComfyUI imports a custom node folder
PRESETS_JSON = REPO / "web" / "presets.json"
EN_NODE_DEFS = REPO / "locales" / "en" / "nodeDefs.json"


def load_pack():
    if PACKAGE not in sys.modules:
        spec = importlib.util.spec_from_file_location(PACKAGE, REPO / "__init__.py",
                                                      submodule_search_locations=[str(REPO)])
        mod = importlib.util.module_from_spec(spec)
        sys.modules[PACKAGE] = mod
        spec.loader.exec_module(mod)
    return sys.modules[PACKAGE]


def dump_json(data) -> str:
    return json.dumps(data, indent=2, ensure_ascii=False) + "\n"


def presets_json() -> dict:
    load_pack()
    return importlib.import_module(f"{PACKAGE}.trainer.presets").web_table()


def comfy_nodes():
    """The pack's nodes module, or None where ComfyUI's comfy_api cannot be imported."""
    comfy = os.environ.get("COMFYUI_PATH", "").strip()
    if not comfy:  # as the tests do: the project's read-only ../shared/comfyui above the repo
        comfy = next((str(p / "shared" / "comfyui") for p in REPO.parents if (p / "shared" / "comfyui").is_dir()), "")
    if comfy and str(Path(comfy).resolve()) not in sys.path:
        sys.path.append(str(Path(comfy).resolve()))
    try:
        import comfy_api.latest  # noqa: F401
    except ImportError:
        return None
    load_pack()
    return importlib.import_module(f"{PACKAGE}.nodes")


def english_node_defs(nodes) -> dict:
    """locales/en/nodeDefs.json: the node classes' own display names, descriptions and tooltips."""
    out = {}
    for node_id, cls in nodes.NODE_CLASS_MAPPINGS.items():
        entry = {"display_name": nodes.NODE_DISPLAY_NAME_MAPPINGS[node_id], "description": cls.DESCRIPTION,
                 "inputs": {}, "outputs": {}}
        spec = cls.INPUT_TYPES()
        for section in ("required", "optional"):
            for name, (_, *opts) in (spec.get(section) or {}).items():
                entry["inputs"][name] = {"name": name, "tooltip": (opts[0] if opts else {}).get("tooltip", "")}
        names = getattr(cls, "RETURN_NAMES", None) or cls.RETURN_TYPES
        for i, name in enumerate(names):
            entry["outputs"][str(i)] = {"name": name, "tooltip": cls.OUTPUT_TOOLTIPS[i]}
        out[node_id] = entry
    return out


def core_node_module():
    """ComfyUI's own nodes.py, loaded by path (the name `nodes` is this pack's folder when the repo is on sys.path)."""
    import torch
    from comfy.cli_args import args

    if not torch.cuda.is_available():
        args.cpu = True  # as `main.py --cpu`: comfy.model_management must not look for a GPU on import
    comfy = next(p for p in map(Path, sys.path) if (p / "comfy_api").is_dir() and (p / "nodes.py").is_file())
    spec = importlib.util.spec_from_file_location("comfyui_core_nodes", comfy / "nodes.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def example_workflows(nodes) -> dict[Path, str]:
    """example_workflows/**.json, built by tools/workflows.py from the node classes' definitions."""
    sys.path.insert(0, str(REPO / "tools"))
    import workflows

    core = core_node_module()
    used = {"CheckpointLoaderSimple", "CLIPTextEncode", "EmptyLatentImage", "KSampler", "VAEDecode", "PreviewImage"}
    classes = {**{k: core.NODE_CLASS_MAPPINGS[k] for k in used}, **nodes.NODE_CLASS_MAPPINGS}
    specs = {k: workflows.NodeSpec.of(workflows.spec_from_class(c)) for k, c in classes.items()}
    titles = {**core.NODE_DISPLAY_NAME_MAPPINGS, **nodes.NODE_DISPLAY_NAME_MAPPINGS}
    return {workflows.WORKFLOWS / rel: dump_json(data) for rel, data in workflows.build_all(specs, titles).items()}


def generated(nodes=None) -> dict[Path, str]:
    out = {PRESETS_JSON: dump_json(presets_json())}
    if nodes is not None:
        out[EN_NODE_DEFS] = dump_json(english_node_defs(nodes))
    return out


def stale(nodes=None) -> list[Path]:
    return [p for p, text in generated(nodes).items() if not p.is_file() or p.read_text(encoding="utf-8") != text]


def main(argv: list[str]) -> int:
    nodes = comfy_nodes()
    if nodes is None:
        print(f"note: {EN_NODE_DEFS.relative_to(REPO)} skipped: ComfyUI's comfy_api does not import here "
              "(set COMFYUI_PATH and use the Python that runs ComfyUI)", file=sys.stderr)
    if argv == ["--check"]:
        bad = stale(nodes)
        for p in bad:
            print(f"stale: {p.relative_to(REPO)} (regenerate with `python tools/generate.py`)")
        return 1 if bad else 0
    if argv not in ([], ["--examples"]):
        print(__doc__)
        return 2
    files = generated(nodes)
    if argv == ["--examples"]:
        if nodes is None:
            print("error: --examples needs ComfyUI (set COMFYUI_PATH and use the Python that runs ComfyUI)",
                  file=sys.stderr)
            return 2
        files.update(example_workflows(nodes))
    for path, text in files.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(path)
        print(f"wrote {path.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
