"""Suites, the harness, records and resume; the CLI's error handling."""
from __future__ import annotations

import json

import pytest
import yaml

from vlpt.cli import main
from vlpt.errors import ConfigError
from vlpt.eval.harness import Harness
from vlpt.eval.suite import DEFAULT_SUITE, load_suite


def write_suite(tmp_path, **overrides) -> str:
    suite = {
        "name": "tiny",
        "backbone": {"model": "vlpt-starter-vit", "pretrained": None},
        "data_root": str(tmp_path / "data"),
        "output": str(tmp_path / "out"),
        "experiments": [{
            "protocol": "few_shot", "dataset": "starter_shapes", "shots": [1], "seeds": [1, 2],
            "params": {"epochs": 1}, "methods": ["zeroshot", "coop"],
        }],
    }
    suite.update(overrides)
    path = tmp_path / "suite.yaml"
    path.write_text(yaml.safe_dump(suite))
    return str(path)


def test_default_suite_is_valid():
    suite = load_suite(DEFAULT_SUITE)
    methods = {run.identity.method for run in suite.runs}
    assert {"zeroshot", "linear_probe", "coop", "kgcoop", "cocoop"} <= methods
    assert {run.identity.seed for run in suite.runs} == {1, 2, 3}


def test_zero_shot_runs_are_not_repeated_per_shot(tmp_path):
    path = write_suite(tmp_path, experiments=[{"protocol": "few_shot", "dataset": "starter_shapes",
                                                "shots": [1, 2], "seeds": [1], "methods": ["zeroshot", "coop"]}])
    identities = [run.identity for run in load_suite(path).runs]
    assert sorted((i.method, i.shots) for i in identities) == [("coop", 1), ("coop", 2), ("zeroshot", 0)]


@pytest.mark.parametrize("experiment, message", [
    ({"methods": ["cooop"]}, "unknown method config 'cooop' \\(did you mean 'coop'.*\\); available: .*coop"),
    ({"dataset": "imagenett"}, "unknown dataset 'imagenett' \\(did you mean 'imagenet'.*\\); valid names: .*imagenet"),
    ({"protocol": "few-shot"}, "unknown protocol 'few-shot'; valid: few_shot"),
    ({"shot": [1]}, "unknown key\\(s\\) 'shot' \\(did you mean 'shots'\\?\\); allowed keys: .*shots"),
    ({"seeds": "1"}, "key 'seeds' has value '1' of type str, expected list"),
    ({"methods": [{"config": "coop", "params": {"n_ctxx": 4}}]}, "unknown key\\(s\\) 'n_ctxx' \\(did you mean 'n_ctx'.*\\); allowed keys: .*n_ctx"),
    ({"methods": [{"config": "coop", "params": {"lr": "fast"}}]}, "key 'lr' has value 'fast'"),
    ({"methods": [{"config": "kgcoop", "params": {"kg_penalty": "l1"}}]},
     "key 'kg_penalty' has value 'l1' of type str, expected 'cosine' or 'squared'"),
    ({"protocol": "cross_dataset"}, "protocol cross_dataset needs a list of targets"),
])
def test_bad_suites_fail_up_front_naming_the_problem(tmp_path, experiment, message):
    base = {"protocol": "few_shot", "dataset": "starter_shapes", "methods": ["coop"]}
    path = write_suite(tmp_path, experiments=[{**base, **experiment}])
    with pytest.raises(ConfigError, match=message) as info:
        load_suite(path)
    assert "suite.yaml" in str(info.value)


def test_bench_writes_one_record_per_run_resumes_and_builds_the_leaderboard(tmp_path, monkeypatch):
    suite = load_suite(write_suite(tmp_path))
    harness = Harness(suite, progress=False)
    paths = harness.run_all()
    records = sorted((tmp_path / "out" / "records").glob("*.json"))
    assert len(records) == 4
    record = json.loads(records[0].read_text())
    assert record["identity"]["dataset"] == "starter_shapes"
    assert 0.0 <= record["metrics"]["test"]["accuracy"] <= 100.0
    assert record["metrics"]["test"]["n"] == 960
    assert record["config"]["method"]["params"]["epochs"] == 1
    assert set(record["timings"]) == {"train_s", "eval_s", "wall_s"} and record["peak_memory_mb"] > 0
    assert record["config"]["selection"] == "fixed"  # zero-shot and CoOp search nothing
    assert {"torch", "open_clip", "lightning"} <= set(record["library_versions"])
    board = paths[0].read_text()
    assert "starter_shapes" in board and "coop" in board and "zeroshot" in board

    # an interrupted suite: one record lost; the next bench runs exactly that run
    lost = records[1]
    lost.unlink()
    executed = []
    resumed = Harness(load_suite(write_suite(tmp_path)), progress=False)
    original = resumed.execute
    monkeypatch.setattr(resumed, "execute", lambda run: executed.append(run.identity.run_id) or original(run))
    resumed.run_all()
    assert executed == [lost.stem]
    assert len(list((tmp_path / "out" / "records").glob("*.json"))) == 4


def test_cli_reports_bad_input_without_a_traceback(tmp_path, capsys):
    path = write_suite(tmp_path, experiments=[{"protocol": "few_shot", "dataset": "starter_shapes", "methods": ["nope"]}])
    assert main(["bench", "--suite", path]) == 2
    assert "vlpt: error:" in capsys.readouterr().err
    assert main(["bench", "--suite", str(tmp_path / "missing.yaml")]) == 2
    assert "missing.yaml does not exist" in capsys.readouterr().err


def test_cli_dry_run_lists_pending_runs(tmp_path, capsys):
    assert main(["bench", "--suite", write_suite(tmp_path), "--dry-run"]) == 0
    assert "4 to do" in capsys.readouterr().out


@pytest.mark.slow  # real Caltech-101 images
@pytest.mark.integration
def test_caltech101_runs_produce_records_and_leaderboard_rows(tmp_path, shared_data):
    path = write_suite(tmp_path, data_root=str(shared_data), experiments=[{
        "protocol": "few_shot", "dataset": "caltech101", "shots": [2], "seeds": [1],
        "params": {"epochs": 1}, "methods": ["coop", "vpt", {"config": "maple", "params": {"prompt_depth": 3}}],
    }])
    harness = Harness(load_suite(path), progress=False)
    paths = harness.run_all()
    records = [json.loads(f.read_text()) for f in (tmp_path / "out" / "records").glob("*.json")]
    assert sorted(r["identity"]["method"] for r in records) == ["coop", "maple", "vpt"]
    for record in records:
        assert record["config"]["data"] == {"train_augment": "crop_flip", "n_train": 200, "n_val": 200, "classes": 100}
        assert record["metrics"]["test"]["n"] == 2465
    rows = [line for line in paths[1].read_text().splitlines() if line.startswith("few_shot")]
    for method in ("coop", "vpt", "maple"):
        assert any("caltech101" in row and f",{method}," in row for row in rows)


def test_multitask_source_prompt_initialises_the_target_run(tmp_path):
    path = write_suite(tmp_path, experiments=[
        {"name": "src", "protocol": "multitask", "datasets": ["starter_digits", "starter_shapes"],
         "shots": [1], "seeds": [1], "params": {"epochs": 1}, "methods": ["coop_m4"]},
        {"protocol": "few_shot", "dataset": "starter_rendered_digits", "shots": [1], "seeds": [1],
         "params": {"epochs": 1}, "methods": [{"config": "coop_m4", "variant": "scratch"},
                                              {"config": "coop_m4", "variant": "mvlpt", "init_from": "experiment:src"}]},
    ])
    suite = load_suite(path)
    source, scratch, transferred = suite.runs
    assert transferred.init_source == source.identity and scratch.init_source is None
    harness = Harness(suite, progress=False)
    harness.run_all()
    records = {r.identity.variant if r.identity.protocol == "few_shot" else "source": r for r in harness.store.records()}
    assert set(records["source"].metrics) == {"starter_digits", "starter_shapes"}
    assert records["source"].metrics["starter_digits"]["n"] == 360  # each task scored on its own test set
    assert records["source"].metrics["starter_shapes"]["n"] == 960
    assert records["source"].identity.dataset == "starter_digits+starter_shapes"
    # MVLPT's code: one label space, the union of the tasks' classes (scoring: own is the other reading)
    assert records["source"].config["data"]["scoring"] == "union" and "scoring" not in records["mvlpt"].config["data"]
    assert suite.runs[0].experiment.scoring == "union"
    assert records["mvlpt"].config["init_from_run"] == source.identity.run_id
    assert records["mvlpt"].config["method"]["params"]["init_from"] == str(harness.checkpoint_path(source.identity))
    assert records["scratch"].config["method"]["params"]["init_from"] is None
    assert harness.checkpoint_path(source.identity).stat().st_size < 64 * 1024


@pytest.mark.parametrize("experiments, message", [
    ([{"protocol": "multitask", "dataset": "starter_shapes", "methods": ["coop"]}], "multitask needs `datasets`"),
    ([{"protocol": "multitask", "datasets": ["starter_shapes", "starter_digits"], "methods": ["linear_probe"]}],
     "linear_probe is fitted \\(or prepared\\) from one task.s training images outside gradient training"),
    ([{"protocol": "multitask", "datasets": ["starter_shapes", "starter_digits"], "methods": ["clip_lora"]}],
     "clip_lora cannot be trained on several tasks .*counted in iterations"),
    ([{"protocol": "multitask", "datasets": ["starter_shapes", "starter_digits"], "methods": ["dept_kgcoop"]}],
     "dept_kgcoop cannot be trained on several tasks .*linear head"),
    ([{"protocol": "few_shot", "dataset": "starter_shapes",
       "methods": [{"config": "coop", "init_from": "experiment:nope"}]}], "names no earlier experiment"),
    ([{"name": "a", "protocol": "few_shot", "dataset": "starter_shapes", "methods": ["coop"]},
      {"protocol": "few_shot", "dataset": "starter_digits", "methods": [{"config": "kgcoop", "init_from": "experiment:a"}]}],
     "experiment 'a' has no run of method config 'kgcoop'"),
    ([{"protocol": "few_shot", "dataset": "starter_shapes", "methods": [{"config": "coop", "init_from": "/no/such.pt"}]}],
     "init_from checkpoint /no/such.pt does not exist"),
])
def test_bad_transfer_settings_fail_up_front(tmp_path, experiments, message):
    with pytest.raises(ConfigError, match=message):
        load_suite(write_suite(tmp_path, experiments=experiments))


def test_gram_initialisation_is_made_once_and_used_by_init_references(tmp_path, monkeypatch):
    path = write_suite(tmp_path, initializations=[
        {"name": "g", "method": "coop_m4", "domains": "starter", "steps": 2, "options": {"batch_size": 8}}],
        experiments=[{"protocol": "few_shot", "dataset": "starter_shapes", "shots": [1], "seeds": [1],
                      "params": {"epochs": 1}, "methods": [{"config": "coop_m4", "variant": "gram",
                                                             "init_from": "init:g"}]}])
    harness = Harness(load_suite(path), progress=False)
    harness.run_all()
    (record,) = harness.store.records()
    assert record.config["method"]["params"]["init_from"] == str(harness.init_path("g"))
    assert record.config["method"]["params"]["regulator_from"] == str(harness.inits / "g.regulator.pt")
    made = harness.init_path("g").stat().st_mtime_ns
    monkeypatch.setattr("vlpt.meta.gram.run_gram", lambda *a, **k: pytest.fail("re-ran GRAM"))
    harness.prepare_initializations()
    assert harness.init_path("g").stat().st_mtime_ns == made

    changed = write_suite(tmp_path, initializations=[
        {"name": "g", "method": "coop_m4", "domains": "starter", "steps": 3, "options": {"batch_size": 8}}],
        experiments=[{"protocol": "few_shot", "dataset": "starter_shapes", "methods": ["zeroshot"]}])
    with pytest.raises(ConfigError, match="initialisation 'g' in .* was made with other settings"):
        Harness(load_suite(changed), progress=False).prepare_initializations()


def test_unknown_initialisation_reference_fails_up_front(tmp_path):
    path = write_suite(tmp_path, experiments=[{"protocol": "few_shot", "dataset": "starter_shapes",
                                               "methods": [{"config": "coop", "init_from": "init:nope"}]}])
    with pytest.raises(ConfigError, match="init_from 'init:nope' names no entry of `initializations`"):
        load_suite(path)


def test_cli_gram_writes_an_initialisation_a_method_can_start_from(tmp_path, capsys):
    out = tmp_path / "gram.pt"
    assert main(["gram", "coop_m4", "--out", str(out), "--steps", "2", "--batch-size", "8",
                 "--data-root", str(tmp_path / "data")]) == 0
    assert str(out) in capsys.readouterr().out
    suite = write_suite(tmp_path, experiments=[{"protocol": "few_shot", "dataset": "starter_shapes",
                                                "methods": [{"config": "coop_m4", "init_from": str(out)}]}])
    assert load_suite(suite).runs[0].method.config.init_from == str(out)


def test_entries_that_would_be_the_same_run_with_other_settings_are_rejected(tmp_path):
    path = write_suite(tmp_path, experiments=[{"protocol": "few_shot", "dataset": "starter_shapes", "methods": [
        "coop", {"config": "coop", "params": {"n_ctx": 4}}]}])
    with pytest.raises(ConfigError, match="same run as an earlier entry .* give it its own `variant:`"):
        load_suite(path)


def test_a_record_made_with_other_settings_is_reported_not_reused(tmp_path):
    experiment = {"protocol": "few_shot", "dataset": "starter_shapes", "shots": [1], "seeds": [1],
                  "params": {"epochs": 1}, "methods": ["coop_m4"]}
    Harness(load_suite(write_suite(tmp_path, experiments=[experiment])), progress=False).run_all()
    changed = Harness(load_suite(write_suite(tmp_path, experiments=[{**experiment, "params": {"epochs": 2}}])),
                      progress=False)
    with pytest.raises(ConfigError, match=r"records/.*\.json .* other settings than the suite's \(epochs\)"):
        changed.pending()
    assert Harness(load_suite(write_suite(tmp_path, experiments=[experiment])), progress=False).pending() == []


def test_a_record_computed_with_another_activation_or_stored_views_is_not_reused(tmp_path):
    """The activation and the feature cache's training views change what a run computes without changing its
    identity: a record made otherwise (old code's GELU for OpenAI weights, 8 stored views) is refused."""
    experiment = {"protocol": "few_shot", "dataset": "starter_shapes", "shots": [1], "seeds": [1],
                  "params": {"epochs": 1}, "methods": ["coop_m4"]}
    Harness(load_suite(write_suite(tmp_path, experiments=[experiment])), progress=False).run_all()
    [path] = (tmp_path / "out" / "records").glob("*.json")
    record = json.loads(path.read_text())
    assert record["config"]["backbone"]["activation"] == "gelu"
    assert record["config"]["feature_cache"]["train_views"] == "per_epoch"
    for key, value, message in [("backbone", {"model": "vlpt-starter-vit", "pretrained": None,
                                              "activation": "quick_gelu"}, "activation quick_gelu, not gelu"),
                                ("feature_cache", {"train_views": 8}, "train_views 8, not per_epoch")]:
        path.write_text(json.dumps({**record, "config": {**record["config"], key: value}}))
        again = Harness(load_suite(write_suite(tmp_path, experiments=[experiment])), progress=False)
        with pytest.raises(ConfigError, match=f"computed otherwise than the suite asks \\({message}\\)"):
            again.pending()
    path.write_text(json.dumps(record))
    assert Harness(load_suite(write_suite(tmp_path, experiments=[experiment])), progress=False).pending() == []
    centre = {"feature_cache": {"train_views": 0}}  # a suite trained on the centre view reuses its own records
    path.write_text(json.dumps({**record, "config": {**record["config"], **centre}}))
    assert Harness(load_suite(write_suite(tmp_path, experiments=[experiment], **centre)), progress=False).pending() == []


@pytest.mark.parametrize("experiment, message", [
    ({"protocol": "base_to_novel", "methods": ["linear_probe"]}, "only subsets of its training classes"),
    ({"protocol": "base_to_novel", "methods": [{"config": "coop", "params": {"csc": True}}]},
     "only its training classes"),
    ({"protocol": "few_shot", "methods": [{"config": "coop", "params": {"lr": 0}}]}, "lr must be positive"),
    ({"protocol": "few_shot", "methods": [{"config": "coop", "params": {"epochs": {}}}]}, "epochs must be at least 1"),
    ({"protocol": "few_shot", "methods": [5]}, "methods entry 5 must be a method config name"),
])
def test_methods_that_cannot_run_the_protocol_or_bad_values_fail_up_front(tmp_path, experiment, message):
    with pytest.raises(ConfigError, match=message):
        load_suite(write_suite(tmp_path, experiments=[{"dataset": "starter_shapes", **experiment}]))


def test_true_half_precision_is_refused_because_it_would_convert_the_shared_backbone(tmp_path):
    with pytest.raises(ConfigError, match="key 'precision' has value 'bf16-true'"):
        load_suite(write_suite(tmp_path, trainer={"precision": "bf16-true"}))


def _test_time_experiments(dataset: str, targets: list[str], eval_limit: int, view_store=None) -> list[dict]:
    """A CoOp source run, then zero-shot, TPT, TPT+CoOp and DiffTPT (tiny random diffusion, its views stored in
    ``view_store``) at test time."""
    difftpt = {"pipeline": "tiny-random", "inference_steps": 2, "generated_views": 3, "views": 6,
               **({"view_store": str(view_store)} if view_store else {})}
    return [
        {"name": "source", "protocol": "few_shot", "dataset": dataset, "shots": [1], "seeds": [1],
         "train_augment": "none", "params": {"epochs": 1}, "methods": ["coop_m4"]},
        {"protocol": "test_time", "dataset": dataset, "targets": targets, "shots": [1], "seeds": [1],
         "eval_limit": eval_limit, "methods": [
             "zeroshot",
             {"config": "tpt", "params": {"views": 6}},
             {"config": "tpt", "variant": "coop-init", "init_from": "experiment:source/coop_m4", "params": {"views": 6}},
             {"config": "difftpt", "params": difftpt},
         ]},
    ]


def _check_test_time_records(tmp_path, paths, targets, eval_limit):
    records = {(r["identity"]["method"], r["identity"]["variant"]): r for r in
               (json.loads(f.read_text()) for f in (tmp_path / "out" / "records").glob("*.json"))
               if r["identity"]["protocol"] == "test_time"}
    assert set(records) == {("zeroshot", "default"), ("tpt", "default"), ("tpt", "coop-init"), ("difftpt", "default")}
    assert records[("tpt", "default")]["identity"]["shots"] == 0
    assert records[("tpt", "coop-init")]["identity"]["shots"] == 1  # the labelled images behind its start
    assert records[("tpt", "coop-init")]["config"]["init_from_run"] is not None
    # TPT's default views follow the reference code: AugMix for a set outside the ImageNet family
    views = records[("tpt", "default")]["config"]["test_time"]["views"]
    assert views == {name: "augmix" for name in ["test", *targets]}
    assert records[("zeroshot", "default")]["config"]["test_time"] == {"stream": "episodic"}  # no views
    for (method, _), record in records.items():
        assert set(record["metrics"]) == {"test", *targets}
        for metrics in record["metrics"].values():
            assert metrics["n"] == eval_limit
            assert (metrics.get("adapt_ms_per_image", 0) > 0) == (method != "zeroshot")
    board = paths[0].read_text()
    section = board[board.index("## Test-time adaptation"):]
    for row in ("| zeroshot | default |", "| tpt | default |", "| tpt | coop-init |", "| difftpt | default |"):
        assert row in section
    assert "ms / image" in section
    assert "| augmix | 1 |" in section and "Views" in section


def test_test_time_protocol_runs_tpt_tpt_coop_and_difftpt_and_reuses_generated_views(tmp_path, monkeypatch):
    targets = ["starter_shapes~pixelate:3"]
    path = write_suite(tmp_path, experiments=_test_time_experiments("starter_shapes", targets, eval_limit=5,
                                                                   view_store=tmp_path / "views"),
                       feature_cache={"folder": str(tmp_path / "cache")})
    paths = Harness(load_suite(path), progress=False).run_all()
    _check_test_time_records(tmp_path, paths, targets, eval_limit=5)
    stored = sorted(p for p in (tmp_path / "views").rglob("*.png"))
    assert len(stored) == 2 * 5 * 3  # two evaluation sets of 5 images, 3 generated views each
    # TPT and TPT+CoOp adapt on one stored entry of view features per evaluation set; DiffTPT stores none
    view_entries = [p.name for p in (tmp_path / "cache").glob("*.s1-e0.*") if ".train." not in p.name]
    assert sorted(name.split(".")[1] for name in view_entries) == sorted(["test", *[t.replace("~", "-").replace(":", "-")
                                                                                    for t in targets]])

    # a DiffTPT record lost: the rerun adapts again but generates nothing
    difftpt = [f for f in (tmp_path / "out" / "records").glob("*.json") if '"difftpt"' in f.read_text()]
    difftpt[0].unlink()
    monkeypatch.setattr("vlpt.tta.diffusion.DiffusionViewGenerator.generate",
                        lambda *args: pytest.fail("stored views were generated again"))
    Harness(load_suite(path), progress=False).run_all()
    assert sorted(p for p in (tmp_path / "views").rglob("*.png")) == stored


@pytest.mark.parametrize("experiment, message", [
    ({"protocol": "test_time", "methods": ["coop"]}, "protocol test_time trains nothing"),
    ({"protocol": "test_time", "methods": [{"config": "tpt", "init_from": "experiment:nope/coop_m4"}]},
     "names no earlier experiment"),
    ({"protocol": "test_time", "methods": ["tpt"], "eval_limit": 0}, "eval_limit must be at least 1"),
    ({"protocol": "test_time", "methods": [{"config": "tpt", "init_from": "experiment:zs/zeroshot"}]},
     "learns nothing from training images"),
    ({"protocol": "test_time", "targets": ["starter_shapes~pixelate:9"], "methods": ["tpt"]}, "severity"),
])
def test_bad_test_time_experiments_fail_up_front(tmp_path, experiment, message):
    zero_shot = {"name": "zs", "protocol": "few_shot", "dataset": "starter_shapes", "methods": ["zeroshot"]}
    path = write_suite(tmp_path, experiments=[zero_shot, {"dataset": "starter_shapes", **experiment}])
    with pytest.raises(ConfigError, match=message):
        load_suite(path)


@pytest.mark.integration
def test_pacs_test_time_rows_for_tpt_and_difftpt(tmp_path, shared_data):
    targets = ["pacs@sketch", "pacs@cartoon"]
    path = write_suite(tmp_path, data_root=str(shared_data),
                       experiments=_test_time_experiments("pacs@photo", targets, eval_limit=4, view_store=tmp_path / "views"))
    paths = Harness(load_suite(path), progress=False).run_all()
    _check_test_time_records(tmp_path, paths, targets, eval_limit=4)


def test_eval_limit_picks_the_same_images_of_a_dataset_and_its_corrupted_copies():
    from dataclasses import replace

    from vlpt.data import EvalSet, Sample
    from vlpt.protocols.classification import limit_eval_set

    samples = [Sample(f"/d/{i:03d}.png", i % 4, f"c{i % 4}") for i in range(50)]
    clean = limit_eval_set(EvalSet("test", samples, ["c0", "c1", "c2", "c3"], ["{}"]), "digits", 10)
    shifted = EvalSet("digits~pixelate:4", [replace(s, corruption="pixelate:4") for s in samples], clean.classnames,
                      ["{}"])
    paired = limit_eval_set(shifted, "digits~pixelate:4", 10)
    assert len(clean.samples) == 10 and [s.path for s in paired.samples] == [s.path for s in clean.samples]
    other = limit_eval_set(EvalSet("test", samples, clean.classnames, ["{}"]), "shapes", 10)
    assert [s.path for s in other.samples] != [s.path for s in clean.samples]


def test_committed_leaderboard_records_match_the_default_suite():
    """Settings that only trade memory for speed (CoCoOp's chunks) never make published records stale."""
    from checkout import LEADERBOARD

    if not (LEADERBOARD / "records").is_dir():
        pytest.skip("no committed leaderboard records")
    harness = Harness(load_suite(DEFAULT_SUITE), output=LEADERBOARD, progress=False)
    assert harness.pending() == []


def test_view_store_is_difftpts_own_setting(tmp_path):
    with pytest.raises(ConfigError, match="`view_store` is a parameter of difftpt now"):
        load_suite(write_suite(tmp_path, view_store=str(tmp_path / "views")))
    from vlpt.methods.difftpt import DiffTPTConfig
    from vlpt.eval.spec import run_settings

    here, there = (run_settings({"view_store": folder, "lr": 0.005}, "none", None, None,
                                result_neutral=DiffTPTConfig.result_neutral) for folder in ("/a", "/b"))
    assert here == there  # where the views are kept changes no result, so a record stays current


def test_a_suites_own_dataset_definition_is_part_of_its_runs_settings():
    from vlpt.eval.spec import RunSpec

    def spec(definitions):
        data = {"train_augment": "flip", **({"definitions": definitions} if definitions is not None else {})}
        return RunSpec("coop", "default", {"lr": 0.1}, None, data, {"activation": "gelu"}, None)

    mine = spec({"colours": {"loader": "coop", "templates": ["a {}."]}})
    assert mine.staleness(spec({"colours": {"loader": "coop", "templates": ["a {}."]}})) == ([], [])
    assert mine.staleness(spec({"colours": {"loader": "image_folder", "templates": ["a {}."]}})) == \
        ([], ["definition of dataset colours (loader)"])
    assert mine.staleness(spec(None)) == ([], [])  # a record made before records kept definitions
