"""Segmentation experiments in suites and the harness: validation up front, records, leaderboard rows."""
from __future__ import annotations

import json

import pytest
import torch
from torch.utils.data import DataLoader

from vlpt.errors import ConfigError
from vlpt.eval.harness import Harness
from vlpt.seg.evaluate import evaluate_segmenter
from vlpt.eval.suite import load_suite
from vlpt.registry import SEG_METHODS
from vlpt.seg.data import SegmentationDataset
from vlpt.seg.data import SegEvalSet
from vlpt.seg.vlsm import VLSMSpec, build_vlsm

from test_harness import write_suite

SEG = {"protocol": "segmentation", "dataset": "starter_seg_shapes", "shots": [8], "seeds": [1],
       "params": {"epochs": 1, "train_decoder": True}, "methods": ["seg_coop"]}


@pytest.mark.parametrize("experiment, message", [
    ({"methods": ["coop"], "params": {}}, "coop is a classification method; protocol segmentation needs a segmentation method"),
    ({"protocol": "few_shot"}, "'starter_seg_shapes' is a segmentation dataset; use it with protocol segmentation"),
    ({"dataset": "starter_shapes"}, "'starter_shapes' is not a segmentation dataset; valid names: .*kvasir_seg"),
    ({"targets": ["kvasir_sge"]}, "'kvasir_sge' is not a segmentation dataset"),
    ({"train_augment": "crop_flip"}, "train_augment flip or none"),
    ({"params": {"epochs": 1}}, "keeps the decoder frozen, but the VLSM .* has a random one"),
    ({"vlsm": {"kind": "clipseg"}}, "kind clipseg needs `model`"),
    ({"vlsm": {"extract_layer": [1]}}, "unknown key\\(s\\) 'extract_layer' \\(did you mean 'extract_layers'\\?\\); allowed keys: .*extract_layers"),
])
def test_bad_segmentation_experiments_fail_up_front(tmp_path, experiment, message):
    with pytest.raises(ConfigError, match=message):
        load_suite(write_suite(tmp_path, experiments=[{**SEG, **experiment}]))


def test_a_classification_experiment_refuses_segmentation_methods_and_vlsm(tmp_path):
    base = {"protocol": "few_shot", "dataset": "starter_shapes", "methods": ["coop"]}
    with pytest.raises(ConfigError, match="seg_vpt is a segmentation method"):
        load_suite(write_suite(tmp_path, experiments=[{**base, "methods": ["seg_vpt"]}]))
    with pytest.raises(ConfigError, match="`vlsm` is for protocol segmentation only"):
        load_suite(write_suite(tmp_path, experiments=[{**base, "vlsm": {}}]))


def test_segmentation_runs_are_identified_by_their_model_and_training_images(tmp_path):
    suite = load_suite(write_suite(tmp_path, experiments=[
        {**SEG, "methods": ["seg_coop", "seg_zeroshot"], "vlsm": {"kind": "clipseg", "model": "tiny-random"},
         "params": {"epochs": 1}},
    ]))
    identities = sorted((r.identity.method, r.identity.backbone, r.identity.shots) for r in suite.runs)
    assert identities == [("seg_coop", "clipseg:tiny-random", 8), ("seg_zeroshot", "clipseg:tiny-random", 0)]
    assert all(r.experiment.train_augment == "flip" for r in suite.runs)  # the segmentation default


def test_kvasir_to_clinicdb_records_in_and_cross_domain_dice_above_the_untrained_model(tmp_path, shared_data):
    """Train on Kvasir-SEG (160 images), evaluate on its test split and on CVC-ClinicDB (domain shift)."""
    experiment = {"protocol": "segmentation", "dataset": "kvasir_seg", "targets": ["cvc_clinicdb"],
                  "shots": [160], "seeds": [1], "params": {"epochs": 4, "batch_size": 16, "lr": 2.0e-3,
                                                           "train_decoder": True},
                  "methods": ["seg_coop", "seg_vpt"]}
    path = write_suite(tmp_path, backbone={"model": "vlpt-starter-vit", "pretrained": "vlpt-starter"},
                       data_root=str(shared_data), experiments=[experiment])
    harness = Harness(load_suite(path), progress=False)
    harness.run_all()
    records = [json.loads(p.read_text()) for p in sorted((tmp_path / "out" / "records").glob("*.json"))]
    assert len(records) == 2
    for record in records:
        assert set(record["metrics"]) == {"test", "cvc_clinicdb"}
        assert record["metrics"]["cvc_clinicdb"]["n"] == 61 and record["config"]["data"]["n_train"] == 160

    # the untrained model (random decoder, initial prompts) on the same ClinicDB test images
    vlsm = build_vlsm(VLSMSpec(), harness.backbone)
    clinic = harness.seg_dataset("cvc_clinicdb")
    torch.manual_seed(1)
    untrained = SEG_METHODS.get("seg_coop")(vlsm, clinic.classnames, clinic.templates,
                                        SEG_METHODS.get("seg_coop").Config(train_decoder=True)).eval()
    loader = DataLoader(SegmentationDataset(clinic.test, clinic, vlsm.image_size, vlsm.mean, vlsm.std), batch_size=64)
    before = evaluate_segmenter(untrained, loader, SegEvalSet("cvc_clinicdb", clinic.test, clinic), harness.device)
    for record in records:
        assert record["metrics"]["cvc_clinicdb"]["dice"] > before["dice"] + 10, (record["identity"], before)
        assert record["metrics"]["test"]["dice"] > before["dice"] + 10
    board = (tmp_path / "out" / "LEADERBOARD.md").read_text()
    assert "## Segmentation (`segmentation`)" in board and "cvc_clinicdb Dice" in board
