"""Writes the files derived from the Python source, or checks that they are current.

    python tools/generate.py            # write them
    python tools/generate.py --check    # exit 1 and name the stale files (what the tests run)

  web/presets.json          trainer.presets.web_table(): the presets, Configure LoRA's widget kinds and every
                            config field's definition (trainer/config.py), for the preset panel's JS
  locales/en/nodeDefs.json  node names, descriptions and tooltips exactly as the node classes give them (the
                            config inputs' tooltips come from the field definitions)
locales/de/ is written by hand; tests/test_workflows.py checks that it covers every input and output.
"""
from __future__ import annotations

import importlib
import importlib.util
import json
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


def english_node_defs() -> dict:
    """locales/en/nodeDefs.json: the node classes' own display names, descriptions and tooltips."""
    load_pack()
    nodes = importlib.import_module(f"{PACKAGE}.nodes")
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


def generated() -> dict[Path, str]:
    return {PRESETS_JSON: dump_json(presets_json()), EN_NODE_DEFS: dump_json(english_node_defs())}


def stale() -> list[Path]:
    return [p for p, text in generated().items() if not p.is_file() or p.read_text(encoding="utf-8") != text]


def main(argv: list[str]) -> int:
    if argv == ["--check"]:
        bad = stale()
        for p in bad:
            print(f"stale: {p.relative_to(REPO)} (regenerate with `python tools/generate.py`)")
        return 1 if bad else 0
    if argv:
        print(__doc__)
        return 2
    for path, text in generated().items():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(path)
        print(f"wrote {path.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
