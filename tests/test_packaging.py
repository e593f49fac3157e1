"""vlpt as a package: a method from another package (entry point ``vlpt.methods``), and a wheel installed in a
fresh virtualenv that finds its shipped files and runs a suite without writing into itself."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]

MYMETHOD = '''
"""A method of another package: CoOp whose logits are scaled."""
from dataclasses import dataclass

from vlpt.methods.coop import CoOp, CoOpConfig
from vlpt.registry import register_method


@dataclass
class MyMethodConfig(CoOpConfig):
    scale: float = 2.0


@register_method("mymethod")
class MyMethod(CoOp):
    Config = MyMethodConfig

    def logits(self, images):
        return self.config.scale * super().logits(images)
'''

PYPROJECT = '''
[build-system]
requires = ["setuptools>=68"]
build-backend = "setuptools.build_meta"

[project]
name = "vlpt-mymethod"
version = "0.1.0"

[project.entry-points."vlpt.methods"]
mymethod = "mypkg.mymethod"

[tool.setuptools]
packages = ["mypkg"]
'''

USE_MYMETHOD = '''
import sys
import yaml
from vlpt.backbone import ClipBackbone
from vlpt.eval.suite import load_suite
from vlpt.factory import create_method, method_config_names
from vlpt.registry import METHODS

method = create_method("mymethod", ClipBackbone("vlpt-starter-vit", pretrained=None), ["cat", "dog"], ["{}"],
                       scale=3.0, n_ctx=4)
assert type(method).__module__ == "mypkg.mymethod" and method.config.scale == 3.0, method
assert "mymethod" in method_config_names() and "mymethod" in METHODS.names()
suite = {"name": "plugin", "backbone": {"model": "vlpt-starter-vit", "pretrained": None},
         "experiments": [{"protocol": "few_shot", "dataset": "starter_shapes", "shots": [1], "seeds": [1],
                          "methods": [{"config": "mymethod", "params": {"scale": 0.5}}]}]}
path = sys.argv[1] + "/suite.yaml"
open(path, "w").write(yaml.safe_dump(suite))
(run,) = load_suite(path).runs
assert (run.identity.method, run.identity.variant, run.method.config.scale) == ("mymethod", "default", 0.5)
print("ok")
'''


def _env(**extra: str) -> dict[str, str]:
    """The environment of a child process, without this checkout on PYTHONPATH unless given."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return {**env, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", **extra}


def _run(args: list, cwd: Path, **env: str) -> str:
    result = subprocess.run([str(a) for a in args], cwd=cwd, env=_env(**env), capture_output=True, text=True,
                            timeout=900)
    assert result.returncode == 0, f"{args} failed:\n{result.stdout[-3000:]}\n{result.stderr[-5000:]}"
    return result.stdout


@pytest.mark.slow  # pip-installs a package
def test_a_method_of_another_package_loads_through_its_entry_point(tmp_path):
    source = tmp_path / "src"
    (source / "mypkg").mkdir(parents=True)
    (source / "pyproject.toml").write_text(PYPROJECT)
    (source / "mypkg" / "__init__.py").write_text("")
    (source / "mypkg" / "mymethod.py").write_text(MYMETHOD)
    target = tmp_path / "site"
    _run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation", "--no-index",
          "--target", target, source], cwd=tmp_path)
    assert (target / "mypkg" / "mymethod.py").is_file()
    out = _run([sys.executable, "-c", USE_MYMETHOD, tmp_path], cwd=tmp_path,
               PYTHONPATH=os.pathsep.join([str(target), str(ROOT)]))
    assert out.strip() == "ok"


CHECK_INSTALLED = '''
import json, sys
from pathlib import Path
import vlpt, vlpt.paths as paths
from vlpt.data.catalog import CATALOG_DIR
from vlpt.eval.suite import DEFAULT_SUITE, load_suite
from vlpt.factory import shipped_config_names
from vlpt.protocols import protocol_names
from vlpt.seg.datasets import SEG_CATALOG_DIR
package = Path(vlpt.__file__).resolve().parent
print(json.dumps({
    "package": str(package), "in_checkout": paths.IN_CHECKOUT, "leaderboard": str(paths.LEADERBOARD_DIR),
    "configs": shipped_config_names(), "catalog": sorted(p.stem for p in CATALOG_DIR.glob("*.yaml")),
    "seg_catalog": sorted(p.stem for p in SEG_CATALOG_DIR.glob("*.yaml")),
    "inside": all(p.resolve().is_relative_to(package) for p in
                  (paths.CONFIG_DIR, CATALOG_DIR, SEG_CATALOG_DIR, DEFAULT_SUITE, paths.STARTER_WEIGHTS)),
    "weights": paths.STARTER_WEIGHTS.is_file(), "starter_runs": len(load_suite(DEFAULT_SUITE).runs),
    "protocols": list(protocol_names()),
}))
'''

TINY_SUITE = {
    "name": "wheel",
    "backbone": {"model": "vlpt-starter-vit", "pretrained": "vlpt-starter"},
    "trainer": {"accelerator": "cpu"},
    "experiments": [{"protocol": "few_shot", "dataset": "starter_shapes", "shots": [1], "seeds": [1],
                     "methods": ["zeroshot"]}],
}


#: test modules run against the installed wheel: protocols end to end, records, leaderboard and site, seeds
WHEEL_TESTS = ("test_protocols.py", "test_results_validate.py", "test_site.py", "test_sample_keys.py")


def _tree(folder: Path) -> dict[str, int]:
    return {str(p.relative_to(folder)): p.stat().st_mtime_ns for p in folder.rglob("*")}


@pytest.mark.slow  # builds a wheel, makes a virtualenv and runs a suite in it
def test_a_wheel_in_a_fresh_virtualenv_finds_its_files_and_runs_a_suite(tmp_path):
    source = tmp_path / "source"  # a copy, so that building writes nothing (build/, egg-info) into the checkout
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    shutil.copytree(ROOT / "vlpt", source / "vlpt", ignore=shutil.ignore_patterns("__pycache__"))
    wheels = tmp_path / "wheels"
    _run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation", "--no-index",
          "-w", wheels, source], cwd=tmp_path)
    (wheel,) = wheels.glob("vlpt-*.whl")
    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", "--system-site-packages", venv], cwd=tmp_path)
    python, vlpt_script = venv / "bin" / "python", venv / "bin" / "vlpt"
    _run([python, "-m", "pip", "install", "--quiet", "--no-deps", "--no-index", wheel], cwd=tmp_path)

    elsewhere = tmp_path / "elsewhere"  # neither the checkout nor the venv
    elsewhere.mkdir()
    info = json.loads(_run([python, "-c", CHECK_INSTALLED], cwd=elsewhere))
    package = Path(info["package"])
    assert package.is_relative_to(venv.resolve()), f"the wheel is shadowed by {package}"
    assert package.parent.name == "site-packages"
    assert not info["in_checkout"] and info["leaderboard"] == "leaderboard"
    assert info["inside"] and info["weights"] and info["starter_runs"] > 0
    assert {"coop", "coop_m4", "zeroshot", "seg_coop"} <= set(info["configs"])
    assert {"imagenet", "dtd"} <= set(info["catalog"]) and "starter_seg_shapes" in info["seg_catalog"]
    assert set(info["protocols"]) == {"few_shot", "base_to_novel", "cross_dataset", "domain_generalization",
                                      "test_time", "online_test_time", "multitask", "segmentation"}  # modules and facts files

    before = _tree(package)
    (elsewhere / "suite.yaml").write_text(yaml.safe_dump(TINY_SUITE))
    out = tmp_path / "out"
    _run([vlpt_script, "bench", "--suite", "suite.yaml", "--output", out, "--data-root", tmp_path / "data"],
         cwd=elsewhere, VLPT_CACHE=str(tmp_path / "cache"))
    records = list((out / "records").rglob("*.json"))
    assert len(records) == 1, records
    assert json.loads(records[0].read_text())["identity"]["method"] == "zeroshot"
    assert _tree(package) == before, "the run wrote into the installed package"
    assert not (elsewhere / "leaderboard").exists()

    # the starter suite, shipped in the wheel: validated whole and the data of its 183 runs checked
    starter = _run([vlpt_script, "bench", "--dry-run", "--output", tmp_path / "starter", "--data-root", tmp_path / "data"],
                   cwd=elsewhere, VLPT_CACHE=str(tmp_path / "cache"))
    assert "183 runs, 183 to do" in starter and "checked the data of 183 run(s)" in starter

    # the tests run from any folder against the installed wheel (they find the checkout's committed
    # leaderboard through tests/checkout.py, not through the package)
    chosen = [ROOT / "tests" / name for name in WHEEL_TESTS]
    _run([python, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "not slow", "--rootdir", ROOT, *chosen],
         cwd=elsewhere, VLPT_CACHE=str(tmp_path / "cache"), VLPT_DATA=str(tmp_path / "data"))
    assert _tree(package) == before, "the tests wrote into the installed package"


def test_the_light_install_keeps_a_cpu_torch():
    """README's CPU-only install puts PyTorch's CPU wheels first: vlpt's requirements must accept them (no local
    build label such as +cu130, no CUDA-only package), so pip keeps them instead of fetching a CUDA build."""
    import tomllib

    from packaging.requirements import Requirement

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    requirements = [Requirement(text) for text in project["dependencies"]]
    for requirement in requirements:
        assert not requirement.name.lower().startswith(("nvidia-", "triton")), requirement
        assert "+" not in str(requirement.specifier), requirement  # a local label would exclude +cpu builds
        if requirement.name in ("torch", "torchvision"):
            cpu_build = {"torch": "2.14.1+cpu", "torchvision": "0.29.1+cpu"}[requirement.name]
            assert requirement.specifier.contains(cpu_build), requirement
    readme = (ROOT / "README.md").read_text()
    assert "pip install torch torchvision --index-url https://download.pytorch.org/whl/cpu" in readme
