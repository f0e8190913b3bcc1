"""trainer/ knows nothing of ComfyUI; the pack imports cleanly where ComfyUI is absent."""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
COMFY_MODULES = {"comfy", "comfy_api", "comfy_extras", "folder_paths", "server", "nodes", "execution", "latent_preview"}


def test_trainer_imports_no_comfyui_module():
    offenders = []
    for f in (REPO / "trainer").rglob("*.py"):
        for node in ast.walk(ast.parse(f.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            offenders += [f"{f.relative_to(REPO)}: {n}" for n in names if n.split(".")[0] in COMFY_MODULES]
    assert offenders == []


def test_pack_imports_without_comfyui_and_registers_nothing():
    code = ("import importlib.util, sys; "
            f"spec = importlib.util.spec_from_file_location('pack', r'{REPO / '__init__.py'}', "
            f"submodule_search_locations=[r'{REPO}']); m = importlib.util.module_from_spec(spec); "
            "sys.modules['pack'] = m; spec.loader.exec_module(m); "
            "print(hasattr(m, 'comfy_entrypoint'), hasattr(m, 'NODE_CLASS_MAPPINGS'), 'comfy' in sys.modules, "
            "m.WEB_DIRECTORY)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd="/")
    assert out.returncode == 0, out.stderr
    # no V1 mapping ever (ComfyUI would take it over comfy_entrypoint), no entry point without comfy_api
    assert out.stdout.split() == ["False", "False", "False", "./web"]


MAX_FUNCTION_LINES = 60  # a reader follows a function of one screen; longer ones are split into named steps


def long_functions(folders=("trainer", "nodes"), limit: int = MAX_FUNCTION_LINES) -> list[str]:
    """`path:line name (N lines)` for each function (methods and nested ones too) longer than `limit`."""
    out = []
    for folder in folders:
        for f in sorted((REPO / folder).rglob("*.py")):
            for node in ast.walk(ast.parse(f.read_text())):
                if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    n = node.end_lineno - node.lineno + 1  # decorators aside, docstring and body included
                    if n > limit:
                        out.append(f"{f.relative_to(REPO)}:{node.lineno} {node.name} ({n} lines)")
    return out


def test_no_function_in_trainer_or_nodes_is_over_60_lines():
    assert long_functions() == []


def test_the_length_check_sees_a_long_function(tmp_path, monkeypatch):
    (tmp_path / "trainer").mkdir()
    body = "\n".join(f"    x{i} = {i}" for i in range(MAX_FUNCTION_LINES))
    (tmp_path / "trainer" / "m.py").write_text(f"class A:\n    def ok(self):\n        pass\n\n\ndef long():\n{body}\n")
    monkeypatch.setattr(sys.modules[__name__], "REPO", tmp_path)
    assert long_functions(("trainer",)) == [f"trainer/m.py:6 long ({MAX_FUNCTION_LINES + 1} lines)"]
