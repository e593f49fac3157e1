"""Training-free test-time methods: TDA's caches, DMN-ZS's memory, Zero's vote, and the memory they share."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from vlpt.errors import ConfigError
from vlpt.factory import resolve_method
from vlpt.methods.dmn import DMNZeroShot
from vlpt.methods.tda import TDA
from vlpt.methods.zero import Zero, vote
from vlpt.tta.cache import EntropyCache
from vlpt.tta.selection import kept_count, prediction_entropy

CLASSES = ["red square", "green circle", "blue star", "yellow cross"]
TEMPLATES = ["a photo of a {}."]


def _features(backbone, seed: int, n: int = 1) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(n, backbone.embed_dim, generator=generator), dim=-1)


@settings(max_examples=50, deadline=None)
@given(st.integers(0, 4), st.lists(st.tuples(st.integers(0, 2), st.floats(0, 5)), max_size=30))
def test_cache_never_exceeds_capacity_and_keeps_the_lowest_entropies(capacity, offers):
    cache = EntropyCache(3, capacity, dim=2)
    for i, (label, entropy) in enumerate(offers):
        cache.offer(label, torch.tensor([float(i), 0.0]), entropy)
    _, labels, entropies, _ = cache.entries()
    assert len(cache) == len(labels) <= 3 * capacity
    for cls in range(3):
        offered = sorted(e for label, e in offers if label == cls)
        held = sorted(entropies[labels == cls].tolist())
        assert len(held) <= capacity
        assert held == pytest.approx(offered[:capacity])  # the lowest entropies offered to the class


def test_cache_keeps_the_first_of_equal_entropies():
    cache = EntropyCache(1, 1, dim=1)
    assert cache.offer(0, torch.tensor([1.0]), 0.5)
    assert not cache.offer(0, torch.tensor([2.0]), 0.5)  # not strictly lower: dropped
    assert cache.offer(0, torch.tensor([3.0]), 0.4)
    assert cache.entries()[0].tolist() == [[3.0]]


# ---- TDA ---------------------------------------------------------------------------------
def _tda(backbone, **params) -> TDA:
    method = TDA(backbone, CLASSES, TEMPLATES, TDA.Config(**params))
    method.prepare_dataset("starter_digits")
    method.start_episodes()
    return method


def test_tda_with_empty_caches_is_zero_shot(tiny_backbone):
    method = _tda(tiny_backbone, positive_capacity=0, negative_capacity=0)
    for seed in range(5):
        features = _features(tiny_backbone, seed)
        assert torch.equal(method.classify_views(features), method.zero_shot(features)[0].float())
    assert len(method.positive) == len(method.negative) == 0


def test_tda_scores_equal_the_closed_form_of_its_caches(tiny_backbone):
    method = _tda(tiny_backbone, negative_alpha=0.5, entropy_band=(0.0, 1.0))
    stream = [_features(tiny_backbone, seed) for seed in range(6)]
    for features in stream[:-1]:
        method.classify_views(features)
    last = stream[-1]
    scores = method.classify_views(last)  # enters the caches first, then is scored against them
    f = last[0]
    expected = method.zero_shot(last)[0].float()
    keys, labels, _, _ = method.positive.entries()
    for key, label in zip(keys, labels):
        expected[label] += 2.0 * math.exp(-5.0 * (1 - float(key @ f)))  # ImageNet's alpha, beta for other datasets
    keys, _, _, probabilities = method.negative.entries()
    for key, p in zip(keys, probabilities):
        expected -= 0.5 * math.exp(-1.0 * (1 - float(key @ f))) * ((p > 0.03) & (p < 1.0)).float()
    assert len(method.negative) > 0
    assert torch.allclose(scores, expected, atol=1e-5)


def test_tda_caches_stay_within_capacity_over_a_stream(tiny_backbone):
    method = _tda(tiny_backbone, entropy_band=(0.0, 1.0))
    for seed in range(40):
        method.classify_views(_features(tiny_backbone, seed))
    _, labels, _, _ = method.positive.entries()
    assert len(labels) > 3 and torch.bincount(labels).max() <= 3
    assert torch.bincount(method.negative.entries()[1]).max() <= 2


def test_tda_negative_cache_admits_only_the_entropy_band(tiny_backbone):
    probe = _tda(tiny_backbone)
    streams = [_features(tiny_backbone, seed) for seed in range(30)]
    normalised = [float(prediction_entropy(probe.zero_shot(f))[0]) / math.log2(len(CLASSES)) for f in streams]
    band = tuple(sorted(normalised)[i] for i in (7, 22))  # a band holding about half of this stream's entropies
    method = _tda(tiny_backbone, entropy_band=band, negative_capacity=30)
    admitted = []
    for features, entropy in zip(streams, normalised):
        before = len(method.negative)
        method.classify_views(features)
        admitted.append(len(method.negative) > before)
    assert admitted == [band[0] < h < band[1] for h in normalised]
    assert 0 < sum(admitted) < len(admitted)
    method = _tda(tiny_backbone, entropy_normalizer="log")
    assert method.normalised_entropy(math.log(len(CLASSES))) == pytest.approx(1.0)


def test_tda_per_dataset_defaults_follow_the_reference(tiny_backbone):
    method = TDA(tiny_backbone, CLASSES, TEMPLATES, TDA.Config())
    method.prepare_dataset("dtd")
    assert (method.positive_alpha, method.positive_beta) == (2.0, 3.0)
    method.prepare_dataset("imagenet_sketch~gaussian_noise:3")
    assert (method.positive_alpha, method.positive_beta) == (2.363, 7.45)
    assert method.view_count("imagenet_r") == 64 and method.view_count("imagenet") == 1
    assert method.auto_templates("imagenet_r") == "clip80" and method.auto_templates("caltech101") == "imagenet7"
    fixed = TDA(tiny_backbone, CLASSES, TEMPLATES, TDA.Config(positive_alpha=1.0))
    fixed.prepare_dataset("dtd")
    assert (fixed.positive_alpha, fixed.positive_beta) == (1.0, 3.0)


def test_tda_over_views_averages_the_confident_ones(tiny_backbone):
    method = _tda(tiny_backbone, selection=0.25)
    features = _features(tiny_backbone, 3, n=8)
    feature, logits, probabilities, _ = method.zero_shot_prediction(features)
    all_logits = method.zero_shot(features).float()
    kept = torch.argsort(prediction_entropy(all_logits), stable=True)[:2]
    assert torch.allclose(feature, features[kept].mean(0))
    assert torch.allclose(logits, all_logits[kept].mean(0))
    assert torch.allclose(probabilities, all_logits[kept].softmax(-1).mean(0))


# ---- DMN-ZS ------------------------------------------------------------------------------
def _dmn(backbone, **params) -> DMNZeroShot:
    method = DMNZeroShot(backbone, CLASSES, TEMPLATES, DMNZeroShot.Config(**params))
    method.prepare_dataset("starter_digits")
    method.start_episodes()
    return method


def test_dmn_without_memory_is_zero_shot_on_the_original_view(tiny_backbone):
    method = _dmn(tiny_backbone, memory_size=0)
    features = _features(tiny_backbone, 1, n=8)
    expected = method.zero_shot(features[:1]).float().log_softmax(-1)[0]
    assert torch.allclose(method.classify_views(features), expected, atol=1e-5)


def test_dmn_memory_read_out_equals_its_closed_form(tiny_backbone):
    method = _dmn(tiny_backbone, dynamic_weight=2.0)
    for seed in range(6):
        method.classify_views(_features(tiny_backbone, seed, n=8))
    query = _features(tiny_backbone, 99)[0]
    keys, labels, _, _ = method.memory.entries()
    prototypes = []
    for cls in range(len(CLASSES)):
        rows = [method.class_embeddings[cls].float()] + [k for k, label in zip(keys, labels) if label == cls]
        weighted = sum(math.exp(-5.5 * (1 - float(k @ query))) * k for k in rows)
        prototypes.append(F.normalize(weighted, dim=-1))
    expected = (tiny_backbone.logit_scale.detach() * torch.stack(prototypes) @ query).softmax(-1)
    assert torch.allclose(method.memory_probabilities(query), expected, atol=1e-5)
    scores = method.classify_views(query[None])
    assert math.isclose(float(scores.exp().sum()), 1.0, rel_tol=1e-5)  # a normalised mixture


def test_dmn_memory_holds_the_original_views_feature(tiny_backbone):
    method = _dmn(tiny_backbone)
    features = _features(tiny_backbone, 5, n=8)
    method.classify_views(features)
    stored, _, _, _ = method.memory.entries()
    assert len(stored) == 1 and torch.allclose(stored[0], features[0])
    assert method.dynamic_weight == 1.0
    method.prepare_dataset("dtd")
    assert method.dynamic_weight == 10.0


# ---- Zero --------------------------------------------------------------------------------
def test_zero_equals_a_majority_vote_of_the_kept_views(tiny_backbone):
    method = Zero(tiny_backbone, CLASSES, TEMPLATES, Zero.Config(selection=0.5))
    checked = 0
    for seed in range(20):
        features = _features(tiny_backbone, seed, n=16)
        logits = method.zero_shot(features).float()
        kept = torch.argsort(prediction_entropy(logits), stable=True)[:kept_count(16, 0.5)]
        counts = torch.bincount(logits[kept].argmax(-1), minlength=len(CLASSES))
        if (counts == counts.max()).sum() > 1:
            continue  # a tie: the tie-break test covers it
        checked += 1
        scores = method.classify_views(features)
        assert int(scores.argmax()) == int(counts.argmax())
        expected = counts.float()  # no tie: no extra vote
        assert torch.allclose(scores.exp(), (expected / expected.sum()).clamp(min=1e-6), atol=1e-6)
    assert checked >= 5


def test_zero_breaks_ties_with_the_most_confident_discarded_view():
    # kept: two views, one vote each for classes 0 and 1; the discarded views predict 2, then 1, then 0
    logits = torch.tensor([[9.0, 0.0, 0.0], [0.0, 9.0, 0.0],
                           [0.0, 0.0, 5.0], [0.0, 4.0, 0.0], [3.0, 0.0, 0.0]])
    votes = vote(logits, 0.4)
    assert votes.tolist() == [1.0, 2.0, 0.0]
    no_breaker = vote(torch.tensor([[9.0, 0.0, 0.0], [0.0, 9.0, 0.0], [1.0, 2.0, 5.0]]), 2 / 3)
    assert no_breaker.tolist() == [1.0, 2.0, 0.0]  # the discarded view scores class 1 above class 0


# ---- protocols ---------------------------------------------------------------------------
def test_online_methods_are_refused_in_episodic_mode_and_episodic_ones_online():
    from types import SimpleNamespace

    from vlpt.protocols import get_protocol

    experiment = SimpleNamespace()
    online = ("method {} adapts online (its state carries from one test image to the next); protocol {} is not a "
              "stream: run it under protocol online_test_time")
    episodic = ("method {} adapts episodically (its state is reset after every test image); protocol {} is a "
                "stream: run it under protocol test_time")
    for config, wrong, message in (("tda", "test_time", online), ("dmn_zs", "few_shot", online),
                                   ("tda", "cross_dataset", online), ("zero", "online_test_time", episodic),
                                   ("tpt", "online_test_time", episodic), ("c_tpt", "online_test_time", episodic)):
        with pytest.raises(ConfigError) as error:
            get_protocol(wrong).check_method(resolve_method(config), experiment, "suite.yaml experiments[0]", config)
        assert str(error.value) == "suite.yaml experiments[0]: " + message.format(config, wrong)
    for config, right in (("tda", "online_test_time"), ("zero", "test_time"), ("zeroshot", "online_test_time")):
        get_protocol(right).check_method(resolve_method(config), experiment, "here", config)


def test_stream_order_is_drawn_from_the_seed():
    from vlpt.protocols.online_test_time import stream_order

    samples = list(range(50))
    assert stream_order(samples, 1, "cifar10") == stream_order(samples, 1, "cifar10~gaussian_noise:3")
    assert stream_order(samples, 1, "cifar10") != stream_order(samples, 2, "cifar10")
    assert sorted(stream_order(samples, 2, "cifar10")) == samples


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="templates"):
        TDA.Config(templates="a photo")
    with pytest.raises(ValueError, match="crop scale|crop_scale|positive_capacity"):
        TDA.Config(positive_capacity=-1)
    with pytest.raises(ValueError, match="dynamic_weight"):
        DMNZeroShot.Config(dynamic_weight=-1.0)


def _stream(backbone, n_views: int, count: int = 12):
    generator = torch.Generator().manual_seed(7)
    return [(torch.randn(n_views, 3, backbone.image_size, backbone.image_size, generator=generator), torch.zeros(0),
             i % len(CLASSES)) for i in range(count)]


def _per_image_scores(method, items, order):
    """Each image's scores when ``method`` meets ``items`` in ``order`` (one stream)."""
    from vlpt.tta.evaluate import evaluate_test_time

    scores, original = [], method.adapt_batch
    method.adapt_batch = lambda f, e: scores.extend(original(f, e)) or scores[-len(f):]
    try:
        evaluate_test_time(method, [items[i] for i in order], torch.device("cpu"))
    finally:
        method.adapt_batch = original
    return dict(zip(order, scores))


@pytest.mark.parametrize("name, views", [("tda", 1), ("dmn_zs", 4)])
def test_online_methods_depend_on_the_stream_order_and_only_on_it(tiny_backbone, name, views):
    method = resolve_method(name).cls(tiny_backbone, CLASSES, TEMPLATES, resolve_method(name).config)
    method.prepare_dataset("starter_digits")
    items = _stream(tiny_backbone, views)
    forward, again = _per_image_scores(method, items, range(12)), _per_image_scores(method, items, range(12))
    backward = _per_image_scores(method, items, range(11, -1, -1))
    assert all(torch.equal(forward[i], again[i]) for i in range(12))  # a new stream starts from empty memory
    assert any(not torch.equal(forward[i], backward[i]) for i in range(12))


@pytest.mark.parametrize("name", ["zero", "c_tpt"])
def test_episodic_training_free_and_calibrated_methods_are_order_independent(tiny_backbone, name):
    resolved = resolve_method(name, {"views": 6})
    method = resolved.cls(tiny_backbone, CLASSES, TEMPLATES, resolved.config)
    items = _stream(tiny_backbone, 6, count=5)
    forward, backward = _per_image_scores(method, items, range(5)), _per_image_scores(method, items, [4, 2, 0, 3, 1])
    assert all(torch.equal(forward[i], backward[i]) for i in range(5))


def test_an_online_method_starts_each_evaluation_set_afresh_with_its_classes(tiny_backbone):
    """Streams of two evaluation sets with different classes: the second equals a fresh method's stream."""
    from vlpt.tta.evaluate import evaluate_test_time

    method = _tda(tiny_backbone, entropy_band=(0.0, 1.0))
    evaluate_test_time(method, _stream(tiny_backbone, 1), torch.device("cpu"))
    three = CLASSES[:3]
    method.set_classnames(three)
    method.prepare_dataset("dtd")
    fresh = TDA(tiny_backbone, three, TEMPLATES, TDA.Config(entropy_band=(0.0, 1.0)))
    fresh.prepare_dataset("dtd")
    items = [(v, e, label % 3) for v, e, label in _stream(tiny_backbone, 1)]
    first, second = _per_image_scores(method, items, range(12)), _per_image_scores(fresh, items, range(12))
    assert method.positive.features.shape[0] == 3
    assert all(torch.equal(first[i], second[i]) for i in range(12))


# ---- DMN-TF ------------------------------------------------------------------------------
class _Shots:
    """A stand-in datamodule whose training images arrive as stored features (as the feature cache gives them)."""

    def __init__(self, features, labels):
        self.batch = (features, labels)

    def train_eval_dataloader(self):
        return [self.batch]


def _dmn_tf(backbone, shots_per_class=2, **params):
    from vlpt.methods.dmn import DMNTrainingFree

    method = DMNTrainingFree(backbone, CLASSES, TEMPLATES, DMNTrainingFree.Config(**params))
    features = _features(backbone, 50, n=shots_per_class * len(CLASSES)) * 3  # not normalised
    labels = torch.arange(len(CLASSES)).repeat_interleave(shots_per_class)
    assert method.fit_without_gradients(_Shots(features, labels))
    method.prepare_dataset("starter_digits")
    method.start_episodes()
    return method, F.normalize(features, dim=-1), labels


def test_dmn_tf_static_memory_equals_its_closed_form(tiny_backbone):
    method, shots, labels = _dmn_tf(tiny_backbone)
    assert method.shots() == 2 and (method.dynamic_weight, method.static_weight) == (1.0, 0.3)  # ImageNet, 2 shots
    assert torch.allclose(method.shot_features, shots)
    query = _features(tiny_backbone, 77)[0]
    prototypes = []
    for cls in range(len(CLASSES)):
        rows = [method.class_embeddings[cls]] + [k for k, label in zip(shots, labels) if label == cls]
        prototypes.append(F.normalize(sum(math.exp(-5.5 * (1 - float(k @ query))) * k for k in rows), dim=-1))
    expected = (tiny_backbone.logit_scale.detach() * torch.stack(prototypes) @ query).softmax(-1)
    assert torch.allclose(method.static_probabilities(query), expected, atol=1e-5)
    # the shots are fixed slots of the dynamic memory too: with nothing stored yet, both read-outs agree
    assert torch.allclose(method.memory_probabilities(query), expected, atol=1e-5)


def test_dmn_tf_scores_mix_three_distributions(tiny_backbone):
    method, _, _ = _dmn_tf(tiny_backbone, dynamic_weight=2.0, static_weight=3.0)
    features = _features(tiny_backbone, 5, n=8)
    query = features[0]
    zero_shot = method.zero_shot(features[:1])[0].softmax(-1)
    scores = method.classify_views(features)  # writes the image to the memory first
    expected = (zero_shot + 2.0 * method.memory_probabilities(query) + 3.0 * method.static_probabilities(query)) / 6
    assert torch.allclose(scores, expected.log(), atol=1e-5)


def test_dmn_tf_without_shots_or_static_weight_is_dmn_zs(tiny_backbone):
    method, _, _ = _dmn_tf(tiny_backbone, shots_per_class=0, dynamic_weight=2.0)
    zs = _dmn(tiny_backbone, dynamic_weight=2.0)
    for seed in range(4):
        features = _features(tiny_backbone, seed, n=8)
        assert torch.allclose(method.classify_views(features), zs.classify_views(features), atol=1e-6)


def test_dmn_tf_classes_it_never_saw_read_their_text_alone(tiny_backbone):
    method, _, _ = _dmn_tf(tiny_backbone)
    method.set_classnames(["purple moon", CLASSES[1]])
    slots = method.fixed_slots()
    assert slots.shape[:2] == (2, 3)  # text + 2 shots of the one class it saw
    assert torch.count_nonzero(slots[0, 1:]) == 0 and torch.count_nonzero(slots[1, 1:]) > 0


def test_dmn_weights_follow_the_reference_picks():
    from vlpt.methods.dmn import reference_weights

    assert reference_weights("dtd", 16) == (1.0, 3.0)
    assert reference_weights("dtd", 3) == (300.0, 300.0)  # between 2 and 4 shots: 2's
    assert reference_weights("imagenet", 4) == (1.0, 0.3)
    assert reference_weights("imagenet_a", 0) == (3.0, 0.0)
    assert reference_weights("imagenet_a", 16) == (1.0, 1.0)  # no few-shot picks for the shifts: ImageNet's
    assert reference_weights("starter_digits~pixelate:4", 16) == (1.0, 1.0)


def test_dmn_tf_on_a_target_without_its_classes_is_dmn_zs(tiny_backbone):
    """No shots of the target's classes: text-only fixed slots and the 0-shot weights, DMN-ZS exactly."""
    method, _, _ = _dmn_tf(tiny_backbone)
    others = ["purple moon", "orange kite"]
    method.set_classnames(others)
    method.prepare_dataset("starter_digits")
    assert method.shots() == 0 and method.static_weight == 0.0
    zs = DMNZeroShot(tiny_backbone, others, TEMPLATES, DMNZeroShot.Config())
    zs.prepare_dataset("starter_digits")
    for seed in range(3):
        features = _features(tiny_backbone, seed, n=8)
        assert torch.allclose(method.classify_views(features), zs.classify_views(features), atol=1e-6)


def test_dmn_tf_does_not_start_from_a_checkpoint(tiny_backbone, tmp_path):
    from vlpt.errors import CheckpointError

    method, _, _ = _dmn_tf(tiny_backbone)
    path = method.save_checkpoint(tmp_path / "dmn_tf.pt")
    with pytest.raises(CheckpointError, match="reads the labelled images of its own run"):
        _dmn_tf(tiny_backbone, init_from=str(path))
