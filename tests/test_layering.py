"""The layering: vlpt.results is a leaf (reading, validating and publishing records loads neither torch nor
Lightning), and the import-linter contract that enforces it names every other module of vlpt; no import
cycles between vlpt's subpackages, nor between the modules of vlpt.results or vlpt.eval."""
import subprocess
import sys
from pathlib import Path

import pytest

import vlpt

LEAF = ("import vlpt.results, vlpt.results.validate, vlpt.results.leaderboard, vlpt.results.site, sys; "
        "assert 'torch' not in sys.modules and 'lightning' not in sys.modules")
PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"


def test_results_imports_neither_torch_nor_lightning():
    done = subprocess.run([sys.executable, "-c", LEAF], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_the_results_contract_forbids_every_other_module():
    tomllib = pytest.importorskip("tomllib")
    contracts = tomllib.loads(PYPROJECT.read_text())["tool"]["importlinter"]["contracts"]
    (leaf,) = [c for c in contracts if c["id"] == "results-leaf"]
    package = Path(vlpt.__file__).parent
    modules = {f"vlpt.{p.stem}" for p in package.glob("*.py") if p.stem != "__init__"}
    modules |= {f"vlpt.{p.parent.name}" for p in package.glob("*/__init__.py")}
    forbidden = {m for m in leaf["forbidden_modules"] if m.startswith("vlpt.")}
    assert forbidden == modules - {"vlpt.errors", "vlpt.results"}


def test_the_no_cycles_contract_covers_vlpt_results_and_eval():
    tomllib = pytest.importorskip("tomllib")
    contracts = tomllib.loads(PYPROJECT.read_text())["tool"]["importlinter"]["contracts"]
    (acyclic,) = [c for c in contracts if c["id"] == "no-cycles"]
    assert acyclic["type"] == "acyclic_siblings"
    assert {"vlpt", "vlpt.results", "vlpt.eval"} <= set(acyclic["ancestors"])
    assert not acyclic.get("ignore_imports")


@pytest.mark.parametrize("ancestor", ["vlpt", "vlpt.results", "vlpt.eval"])
def test_no_two_siblings_import_each_other(ancestor):
    """What the no-cycles contract checks: chains of any length, so a cycle through three siblings shows
    as two that reach each other (any import counts, a function-level one too)."""
    grimp = pytest.importorskip("grimp")
    graph = grimp.build_graph("vlpt")
    children = sorted(graph.find_children(ancestor))
    imports = {(a, b) for a in children for b in children
               if a != b and graph.find_shortest_chains(a, b, as_packages=True)}
    cycles = sorted((a, b) for a, b in imports if a < b and (b, a) in imports)
    assert cycles == []
