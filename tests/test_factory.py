"""create_method and the method configs: one source of defaults, names, files, and errors that list the names."""
from __future__ import annotations

import dataclasses

import pytest
import yaml

from vlpt.config import load_yaml
from vlpt.errors import ConfigError
from vlpt.eval.suite import load_suite
from vlpt.factory import create_method, method_config_names, resolve_method, shipped_config_names
from vlpt.methods.coop import CoOp
from vlpt.paths import METHOD_CONFIG_DIR
from vlpt.registry import method_class, method_names

SHIPPED = shipped_config_names()


def test_every_method_has_a_shipped_config_and_the_configs_ship_in_the_package():
    assert METHOD_CONFIG_DIR.parent.parent.name == "vlpt"
    assert set(method_names()) <= set(SHIPPED)
    assert method_config_names() == sorted({*SHIPPED, *method_names()})


@pytest.mark.parametrize("name", SHIPPED)
def test_a_config_holds_only_what_differs_from_its_dataclass(name):
    data = load_yaml(METHOD_CONFIG_DIR / f"{name}.yaml")
    defaults = method_class(data["method"]).Config()
    repeated = {k: v for k, v in (data.get("params") or {}).items() if getattr(defaults, k) == v}
    assert not repeated, f"{name}.yaml repeats its dataclass's defaults: {repeated}"


@pytest.mark.parametrize("name", SHIPPED)
def test_a_config_resolves_to_its_dataclass_defaults_plus_its_params(name):
    data = load_yaml(METHOD_CONFIG_DIR / f"{name}.yaml")
    cls = method_class(data["method"])
    resolved = resolve_method(name)
    expected = dataclasses.replace(cls.Config(), **(data.get("params") or {}))
    assert resolved.cls is cls
    assert dataclasses.asdict(resolved.config) == dataclasses.asdict(expected)
    assert resolved.variant == ("default" if name == cls.name else name)


def test_create_method_by_name_shipped_config_and_file(tiny_backbone, tmp_path):
    coop = create_method("coop", tiny_backbone, ["cat", "dog"], ["a photo of a {}."], epochs=3)
    assert isinstance(coop, CoOp) and coop.config.n_ctx == 16 and coop.config.epochs == 3
    assert coop.config.dataset_epochs == {"imagenet": 50}  # the shipped `coop` config, not the bare dataclass
    m4 = create_method("coop_m4", tiny_backbone, ["cat"], ["{}"])
    assert (m4.config.n_ctx, m4.config.ctx_init) == (4, "a photo of a")
    path = tmp_path / "my_coop.yaml"
    path.write_text("# CoOp with 8 context vectors\nmethod: coop\nparams: {n_ctx: 8}\n")
    mine = create_method(path, tiny_backbone, ["cat"], ["{}"], lr=0.01)
    assert (mine.config.n_ctx, mine.config.lr, mine.config.dataset_epochs) == (8, 0.01, {})
    assert resolve_method(str(path)).variant == "my_coop"
    assert resolve_method(METHOD_CONFIG_DIR / "coop_m4.yaml").variant == "coop_m4"  # a shipped file is its name


def test_unknown_names_and_files_are_named_with_the_valid_names(tmp_path):
    with pytest.raises(ConfigError, match=r"unknown method config 'coopp' \(did you mean 'coop'.*\); available: apt, c_tpt, c_tpt_natural_shift, clap, clip_adapter, clip_lora, cocoop, cones, coop, .*vpt"):
        resolve_method("coopp")
    with pytest.raises(ConfigError, match=r"method config file missing\.yaml does not exist"):
        resolve_method("missing.yaml", relative_to=tmp_path)
    bad = tmp_path / "bad.yaml"
    for text, message in [("params: {n_ctx: 2}\n", r"bad\.yaml: a method config file needs `method:`"),
                          ("method: copo\n", r"bad\.yaml: unknown method 'copo' \(did you mean 'coop'.*\); valid names: apt, c_tpt, clap, clip_adapter"),
                          ("method: coop\nextra: 1\n", r"bad\.yaml: unknown key 'extra'"),
                          ("method: coop\nparams: [1]\n", r"`params` a mapping"),
                          ("method: coop\nparams: {n_ctxx: 2}\n", r"bad\.yaml\): unknown key\(s\) 'n_ctxx'")]:
        bad.write_text(text)
        with pytest.raises(ConfigError, match=message):
            resolve_method("bad.yaml", where="suite.yaml", relative_to=tmp_path)


def test_a_suite_entry_takes_a_config_file_relative_to_the_suite(tmp_path):
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "coop_m8.yaml").write_text("method: coop\nparams: {n_ctx: 8, ctx_init: null}\n")
    suite = {"name": "files", "backbone": {"model": "vlpt-starter-vit", "pretrained": None},
             "initializations": [{"name": "gram-m8", "method": "configs/coop_m8.yaml"}],
             "experiments": [{"protocol": "few_shot", "dataset": "starter_shapes", "shots": [1], "seeds": [1],
                              "methods": ["coop_m4", {"config": "configs/coop_m8.yaml", "params": {"epochs": 2}}]}]}
    (tmp_path / "suite.yaml").write_text(yaml.safe_dump(suite))
    loaded = load_suite(tmp_path / "suite.yaml")
    runs = loaded.runs
    # GRAM reads the initialisation's config wherever it runs
    assert loaded.initializations[0].method == str((tmp_path / "configs" / "coop_m8.yaml").resolve())
    assert [(r.identity.method, r.identity.variant) for r in runs] == [("coop", "coop_m4"), ("coop", "coop_m8")]
    assert (runs[1].method.config.n_ctx, runs[1].method.config.epochs) == (8, 2)
