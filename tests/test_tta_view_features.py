"""Stored features of TPT's views: predictions from them equal those from encoding the views, bit for bit (DiffTPT's
too, its generated views encoded per run); a second run reads them instead of encoding; the time it reports
still counts the encoding."""
from __future__ import annotations

import pytest
import torch

from vlpt.data.feature_cache import FeatureCache, FeatureCacheWarning
from vlpt.methods.difftpt import DiffTPT
from vlpt.methods.tpt import TPT
from vlpt.tta.evaluate import evaluate_test_time
from vlpt.tta.view_features import StoredViewFeatures

from test_feature_cache import make_samples

CLASSES = ["class0", "class1", "class2"]


def _tpt(backbone, **params) -> TPT:
    return TPT(backbone, CLASSES, ["a photo of a {}."], TPT.Config(**{"views": 8, "augment": "augmix", "steps": 2,
                                                                     "lr": 0.05, **params}))


def _views(method, samples, seed=1):
    cfg = method.backbone.preprocess_cfg
    return method.test_time_dataset(samples, method.backbone.image_size, cfg["mean"], cfg["std"], seed=seed)


@pytest.fixture
def samples(tmp_path):
    return make_samples(tmp_path / "images", count=5)


def test_scores_from_stored_features_equal_scores_from_views(tmp_path, samples, tiny_backbone):
    """Every image's scores, adapting on stored features (written, then read back), equal adapting on its views."""
    method = _tpt(tiny_backbone)
    views = _views(method, samples)
    cache = FeatureCache(tmp_path / "cache", tiny_backbone)
    method.start_episodes()
    from_views = [method.adapt_and_predict(views[i][0]) for i in range(len(views))]
    for round_ in ("written", "read back"):
        stored = StoredViewFeatures(_views(method, samples), cache, "toy", "test")
        for i, expected in enumerate(from_views):
            features, extra, label, seconds = stored[i]
            scores = method.adapt_on_features(torch.nn.functional.normalize(features, dim=-1))
            assert torch.equal(scores, expected), f"image {i}, features {round_}"
            assert label == samples[i].label and seconds > 0 and not len(extra)
    assert len(cache.computed) == 1 and len(cache.loaded) == 1
    unadapted = _tpt(tiny_backbone, steps=0)
    unadapted.start_episodes()
    assert not torch.equal(unadapted.adapt_and_predict(views[0][0]), from_views[0]), "adaptation changed nothing"


def test_evaluation_on_stored_features_equals_evaluation_on_views(tmp_path, samples, tiny_backbone):
    method = _tpt(tiny_backbone)
    on_views = evaluate_test_time(method, _views(method, samples), torch.device("cpu"))
    cache = FeatureCache(tmp_path / "cache", tiny_backbone)
    first = evaluate_test_time(method, StoredViewFeatures(_views(method, samples), cache, "toy", "test"),
                               torch.device("cpu"))
    assert first["accuracy"] == on_views["accuracy"] and first["n"] == len(samples)
    other = _tpt(tiny_backbone, ctx_init=None, lr=0.5)  # another prompt reads the same stored views
    second = evaluate_test_time(other, StoredViewFeatures(_views(other, samples), cache, "toy", "test"),
                                torch.device("cpu"))
    assert second == {**evaluate_test_time(other, _views(other, samples), torch.device("cpu")),
                      "adapt_ms_per_image": second["adapt_ms_per_image"]}
    assert len(cache.computed) == 1 and len(cache.loaded) == 1


def test_the_time_per_image_counts_the_stored_encoding_seconds(tmp_path, samples, tiny_backbone, monkeypatch):
    """A run reading stored features reports the encoding time the entry holds, as if it had encoded the views."""
    method = _tpt(tiny_backbone)
    stored = StoredViewFeatures(_views(method, samples), FeatureCache(tmp_path / "cache", tiny_backbone), "toy", "test")
    read = StoredViewFeatures.__getitem__
    monkeypatch.setattr(StoredViewFeatures, "__getitem__", lambda self, i: (*read(self, i)[:3], 10.0))
    assert evaluate_test_time(method, stored, torch.device("cpu"))["adapt_ms_per_image"] >= 10_000


def test_entries_depend_on_the_seed_the_view_count_and_the_augmentation(tmp_path, samples, tiny_backbone):
    cache = FeatureCache(tmp_path / "cache", tiny_backbone)
    keys = {StoredViewFeatures(_views(_tpt(tiny_backbone, **params), samples, seed), cache, "toy", "test").key(0)
            for params, seed in [({}, 1), ({}, 2), ({"views": 9}, 1), ({"augment": "crop_flip"}, 1),
                                 ({"view_interpolation": "bicubic"}, 1)]}
    assert len({cache.path_for(key) for key in keys}) == 5
    same_prompt_elsewhere = _tpt(tiny_backbone, ctx_init=None, lr=0.5)  # the prompt is not part of the key
    assert StoredViewFeatures(_views(same_prompt_elsewhere, samples), cache, "toy", "test").key(0) in keys


def test_a_truncated_entry_is_recomputed_with_a_warning(tmp_path, samples, tiny_backbone):
    method = _tpt(tiny_backbone)
    cache = FeatureCache(tmp_path / "cache", tiny_backbone)
    stored = StoredViewFeatures(_views(method, samples), cache, "toy", "test")
    expected = stored[0][0]
    path = cache.path_for(stored.key(0))
    path.write_bytes(path.read_bytes()[:-50])
    with pytest.warns(FeatureCacheWarning, match=str(path.name)):
        again = StoredViewFeatures(_views(method, samples), cache, "toy", "test")[0][0]
    assert torch.equal(again, expected)


def test_chunks_cover_long_sets(tmp_path, tiny_backbone, monkeypatch):
    monkeypatch.setattr("vlpt.tta.view_features.CHUNK", 2)
    samples = make_samples(tmp_path / "images", count=5)
    cache = FeatureCache(tmp_path / "cache", tiny_backbone)
    stored = StoredViewFeatures(_views(_tpt(tiny_backbone), samples), cache, "toy", "test")
    assert [stored[i][2] for i in range(5)] == [s.label for s in samples]
    assert len(cache.computed) == 3


def _difftpt(backbone, store) -> DiffTPT:
    return DiffTPT(backbone, CLASSES, ["a photo of a {}."],
                   DiffTPT.Config(views=8, augment="augmix", pipeline="tiny-random", inference_steps=2,
                                  generated_views=3, view_store=str(store), lr=0.05))


def test_difftpt_on_stored_features_equals_difftpt_on_views_and_shares_tpts_entries(tmp_path, samples, tiny_backbone):
    """DiffTPT's conventional views are TPT's (same settings): it reads the entry a TPT run stored, encodes its
    generated views itself, and scores every image as it does encoding everything, bit for bit."""
    method = _difftpt(tiny_backbone, tmp_path / "generated")
    on_views = _views(method, samples)
    assert DiffTPT.frozen_view_features and len(on_views[0][1]) == 3
    method.start_episodes()
    expected = [method.adapt_and_predict(*on_views[i][:2]) for i in range(len(samples))]
    cache = FeatureCache(tmp_path / "cache", tiny_backbone)
    StoredViewFeatures(_views(_tpt(tiny_backbone), samples), cache, "toy", "test")[0]  # a TPT run stores the views
    stored = StoredViewFeatures(_views(method, samples), cache, "toy", "test")
    for i, scores in enumerate(expected):
        features, extra, label, _ = stored[i]
        assert torch.equal(extra, on_views[i][1]) and label == samples[i].label
        extra_features = method.encode_views(extra)[0]
        assert torch.equal(method.adapt_on_features(torch.nn.functional.normalize(features, dim=-1), extra_features),
                           scores), f"image {i}"
    assert len(cache.computed) == 1 and len(cache.loaded) == 1  # DiffTPT read TPT's entry
    evaluated = evaluate_test_time(method, stored, torch.device("cpu"))
    assert evaluated == {**evaluate_test_time(method, on_views, torch.device("cpu")),
                         "adapt_ms_per_image": evaluated["adapt_ms_per_image"]}
