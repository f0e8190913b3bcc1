"""What the Comfy Registry and pip read: one version, one dependency list, the licence, the ignore file."""
from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    tomllib = pytest.importorskip("tomli")


@pytest.fixture(scope="module")
def pyproject() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))


def test_one_version_source(pyproject):
    import trainer

    assert trainer.__version__ == pyproject["project"]["version"]
    # the project's own files only: not a venv, build or cache folder inside the checkout (.venv, .git, …)
    others = [p for p in REPO.rglob("*.py") if not any(part.startswith(".") for part in p.relative_to(REPO).parts)
              and "tests" not in p.parts and "build" not in p.relative_to(REPO).parts
              and re.search(r'(?m)^__version__\s*=\s*"', p.read_text(encoding="utf-8", errors="replace"))
              and "_shim" not in p.parts]
    assert others == [], "a second hard-coded version"


def test_requirements_txt_is_the_pyproject_dependency_list(pyproject):
    lines = [ln.strip() for ln in (REPO / "requirements.txt").read_text().splitlines()
             if ln.strip() and not ln.startswith("#")]
    assert lines == pyproject["project"]["dependencies"]


def test_every_imported_third_party_module_is_declared(pyproject):
    declared = {re.split(r"[<>=!~ ]", d)[0].lower() for d in pyproject["project"]["dependencies"]}
    names = {"PIL": "pillow"}
    imported = set()
    for path in [*(REPO / "trainer").rglob("*.py"), *(REPO / "nodes").rglob("*.py")]:
        imported |= set(re.findall(r"(?m)^\s*(?:import|from) (numpy|torch|diffusers|peft|accelerate|transformers|"
                                   r"safetensors|PIL)\b", path.read_text(encoding="utf-8")))
    assert {names.get(m, m) for m in imported} <= declared


def test_registry_metadata(pyproject):
    comfy = pyproject["tool"]["comfy"]
    assert comfy["PublisherId"] and comfy["DisplayName"] and comfy["Icon"].endswith("docs/icon.svg")
    assert (REPO / "docs" / "icon.svg").is_file() and comfy["requires-comfyui"].startswith(">=")
    assert pyproject["project"]["classifiers"] and "MIT" in (REPO / "LICENSE").read_text()
    # PEP 639: an SPDX expression and the file; a License classifier beside it is an error in setuptools >= 77
    assert pyproject["project"]["license"] == "MIT" and pyproject["project"]["license-files"] == ["LICENSE"]
    assert not [c for c in pyproject["project"]["classifiers"] if c.startswith("License ::")]
    ignored = [ln.strip() for ln in (REPO / ".comfyignore").read_text().splitlines()
               if ln.strip() and not ln.startswith("#")]
    assert {"tests/", "bench/", "docs/"} <= set(ignored)
    for needed in ("nodes", "trainer", "web", "locales", "example_workflows", "LICENSE", "README.md"):
        assert not any(needed.startswith(i.rstrip("/")) for i in ignored), needed


def test_pip_install_carries_every_trainer_subpackage(pyproject):
    """`pip install .` lists its packages by hand (trainer/ installs as lora_studio): a new subpackage
    left out of that list would install a console command that cannot import it."""
    setup = pyproject["tool"]["setuptools"]
    dirs = {d.relative_to(REPO).as_posix() for d in (REPO / "trainer").rglob("__init__.py")
            for d in [d.parent] if "__pycache__" not in d.parts}
    mapped = {v for k, v in setup["package-dir"].items() if k in setup["packages"]}
    assert dirs <= mapped, f"not installed by pip: {sorted(dirs - mapped)}"
