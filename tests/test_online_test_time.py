"""The online test-time protocol and the test-time methods beyond TPT, run through the harness."""
from __future__ import annotations

import json

import pytest
import torch

from tests.test_harness import write_suite
from vlpt.eval.harness import Harness
from vlpt.eval.suite import load_suite
from vlpt.methods.tpt import TPT
from vlpt.methods.zeroshot import ZeroShotCLIP
from vlpt.results.validate import validate_records
from vlpt.tta.evaluate import evaluate_test_time


def _experiments(dataset: str, targets: list[str], eval_limit: int, seeds=(1, 2)) -> list[dict]:
    return [
        {"protocol": "online_test_time", "dataset": dataset, "targets": targets, "seeds": list(seeds),
         "eval_limit": eval_limit, "shots": [2],  # DMN-TF's labelled images (the others read none)
         "methods": ["zeroshot", {"config": "tda", "params": {"views": 4}},
                     {"config": "dmn_zs", "params": {"views": 4}}, {"config": "dmn_tf", "params": {"views": 4}}]},
        {"protocol": "test_time", "dataset": dataset, "targets": targets, "seeds": list(seeds),
         "eval_limit": eval_limit, "methods": [{"config": "zero", "params": {"views": 6}},
                                               {"config": "c_tpt", "params": {"views": 6}}]},
    ]


#: the project's pretrained starter CLIP: the same weights in every harness (random ones differ per harness)
STARTER = {"model": "vlpt-starter-vit", "pretrained": "vlpt-starter"}


def _records(folder) -> dict:
    records = {}
    for path in (folder / "records").glob("*.json"):
        record = json.loads(path.read_text())
        identity = record["identity"]
        records[(identity["protocol"], identity["method"], identity["seed"])] = record
    return records


def _check(records, targets, eval_limit):
    methods = {"online_test_time": ("zeroshot", "tda", "dmn_zs", "dmn_tf"), "test_time": ("zero", "c_tpt")}
    for protocol, names in methods.items():
        for name in names:
            for seed in (1, 2):
                record = records[(protocol, name, seed)]
                assert record["config"]["test_time"]["stream"] == ("online" if protocol == "online_test_time"
                                                                   else "episodic")
                for metrics in record["metrics"].values():
                    assert metrics["n"] == eval_limit and 0 <= metrics["ece"] <= 100 and metrics["nll"] >= 0
                assert set(record["metrics"]) == {"test", *targets}
                assert record["identity"]["shots"] == (2 if name == "dmn_tf" else 0)


def test_online_and_new_test_time_methods_run_and_record_their_stream(tmp_path):
    targets = ["starter_digits~pixelate:3"]
    path = write_suite(tmp_path, backbone=STARTER, experiments=_experiments("starter_digits", targets, eval_limit=24))
    paths = Harness(load_suite(path), progress=False).run_all()
    records = _records(tmp_path / "out")
    _check(records, targets, 24)
    report = validate_records(tmp_path / "out")
    assert report.ok, report

    def scores(protocol, method, seed):
        return {name: {k: v for k, v in m.items() if k != "adapt_ms_per_image"}
                for name, m in records[(protocol, method, seed)]["metrics"].items()}

    # zero-shot does not depend on the stream's order; TDA's and DMN's caches do
    zs1, zs2 = scores("online_test_time", "zeroshot", 1), scores("online_test_time", "zeroshot", 2)
    for name in zs1:
        assert zs1[name]["accuracy"] == zs2[name]["accuracy"]
        assert zs1[name]["nll"] == pytest.approx(zs2[name]["nll"], rel=1e-6)
    for method in ("tda", "dmn_zs", "dmn_tf"):
        assert scores("online_test_time", method, 1) != scores("online_test_time", method, 2)
    assert records[("online_test_time", "dmn_tf", 1)]["config"]["data"]["n_train"] == 20  # 2 shots x 10 digits
    board = paths[0].read_text()
    section = board[board.index("## Online test-time adaptation"):]
    assert "| tda | default |" in section and "ECE %" in section

    # the same seed gives the same stream: a second output folder reproduces every score
    again = write_suite(tmp_path, backbone=STARTER, output=str(tmp_path / "again"),
                        experiments=_experiments("starter_digits", targets, eval_limit=24, seeds=(2,)))
    Harness(load_suite(again), progress=False).run_all()
    repeated = _records(tmp_path / "again")
    for method in ("tda", "dmn_zs"):
        assert {n: {k: v for k, v in m.items() if k != "adapt_ms_per_image"}
                for n, m in repeated[("online_test_time", method, 2)]["metrics"].items()} == \
            scores("online_test_time", method, 2)


def test_episodic_methods_are_order_independent(tiny_backbone):
    """TPT's score for every image is the same whatever came before it; zero-shot's too."""
    classes = ["red square", "green circle", "blue star"]
    generator = torch.Generator().manual_seed(0)
    images = [(torch.randn(6, 3, tiny_backbone.image_size, tiny_backbone.image_size, generator=generator),
               torch.zeros(0), i % 3) for i in range(5)]
    tpt = TPT(tiny_backbone, classes, ["a photo of a {}."], TPT.Config(views=6, steps=2, lr=0.05))
    seen = {}

    def run(order):
        scores = []
        original = tpt.adapt_batch
        tpt.adapt_batch = lambda f, e: scores.extend(original(f, e)) or scores[-len(f):]
        evaluate_test_time(tpt, [images[i] for i in order], torch.device("cpu"))
        tpt.adapt_batch = original
        return dict(zip(order, scores))

    seen["forward"], seen["backward"] = run([0, 1, 2, 3, 4]), run([4, 2, 0, 3, 1])
    for i in range(5):
        assert torch.equal(seen["forward"][i], seen["backward"][i])
    assert ZeroShotCLIP.adapts_at_test_time is False


@pytest.mark.integration
@pytest.mark.parametrize("dataset, targets", [("pacs@photo", ["pacs@sketch"]),
                                              ("cifar10", ["cifar10~gaussian_noise:3"])])
def test_new_test_time_methods_on_real_images(tmp_path, shared_data, dataset, targets):
    path = write_suite(tmp_path, data_root=str(shared_data),
                       experiments=_experiments(dataset, targets, eval_limit=8))
    Harness(load_suite(path), progress=False).run_all()
    _check(_records(tmp_path / "out"), targets, 8)
