"""Seeded sampling, the base/novel rule and the protocols, on in-memory toy datasets."""
from __future__ import annotations

import numpy as np
import pytest

from vlpt.data import DatasetSplits, Sample, base_novel_split, sample_few_shot, split_rng
from vlpt.data.fewshot import split_per_class
from vlpt.errors import ConfigError, DatasetError
from vlpt.protocols import build_data, protocol_names


def toy(n_classes=5, per_class=(30, 10, 10), name="toy", names=None) -> DatasetSplits:
    names = names or [f"class_{i}" for i in range(n_classes)]
    parts = [[Sample(f"/{name}/{part}/{c}/{i:03d}.png", label, c) for label, c in enumerate(names)
              for i in range(count)] for part, count in zip(("train", "val", "test"), per_class)]
    return DatasetSplits(name, names, *parts, templates=["a photo of a {}."])


def paths(samples):
    return [s.path for s in samples]


def test_split_rng_is_stable_and_stream_specific():
    assert split_rng(1, "train").integers(1 << 30) == split_rng(1, "train").integers(1 << 30)
    draws = {split_rng(s, stream).integers(1 << 30) for s in (1, 2) for stream in ("train", "val")}
    assert len(draws) == 4
    assert split_rng(np.int64(1), "train").integers(1 << 30) == split_rng(1, "train").integers(1 << 30)
    with pytest.raises(ConfigError):
        split_rng(-1, "train")


def test_samples_pickle():  # DataLoader workers may pickle them
    import pickle

    sample = toy().train[0]
    assert pickle.loads(pickle.dumps(sample)) == sample


def test_split_rng_leaves_global_state_alone():
    np.random.seed(0)
    expected = np.random.rand()
    np.random.seed(0)
    sample_few_shot(toy().train, 4, split_rng(1, "train"))
    assert np.random.rand() == expected


def test_few_shot_k_per_class_deterministic_and_seed_dependent():
    data = toy()
    first = sample_few_shot(data.train, 4, split_rng(1, "train"))
    again = sample_few_shot(list(reversed(data.train)), 4, split_rng(1, "train"))  # input order irrelevant
    other = sample_few_shot(data.train, 4, split_rng(2, "train"))
    assert paths(first) == paths(again)
    assert paths(first) != paths(other)
    assert np.bincount([s.label for s in first]).tolist() == [4] * 5
    assert len(set(paths(first))) == 20
    assert first == sorted(first, key=lambda s: (s.label, s.path))


def test_few_shot_takes_all_of_a_small_class():
    data = toy(per_class=(3, 1, 1))
    chosen = sample_few_shot(data.train, 16, split_rng(1, "train"))
    assert len(chosen) == 15 and set(paths(chosen)) == set(paths(data.train))
    assert sample_few_shot(data.train, None, split_rng(1, "x")) == sorted(data.train, key=lambda s: (s.label, s.path))


def test_split_per_class_disjoint_with_coop_proportions():
    data = toy(per_class=(10, 0, 0))
    train, val, test = split_per_class(data.train, [0.5, 0.2], split_rng(3, "split"))
    assert (len(train), len(val), len(test)) == (25, 10, 15)
    assert not (set(paths(train)) & set(paths(val)) or set(paths(train)) & set(paths(test))
                or set(paths(val)) & set(paths(test)))


def test_base_novel_rule_five_classes():
    base, novel = base_novel_split(toy(5))
    assert base.classnames == ["class_0", "class_1", "class_2"]
    assert novel.classnames == ["class_3", "class_4"]
    assert sorted({s.label for s in novel.test}) == [0, 1]
    assert all(novel.classnames[s.label] == s.classname for s in novel.train + novel.val + novel.test)
    assert all(base.classnames[s.label] == s.classname for s in base.test)


def test_few_shot_protocol():
    data = build_data("few_shot", toy(), 8, 1)
    assert len(data.train) == 40 and len(data.val) == 20  # val gets min(K, 4)
    assert [e.name for e in data.eval_sets] == ["test"] and len(data.eval_sets[0].samples) == 50
    assert data.classnames == toy().classnames and data.templates == ["a photo of a {}."]
    assert not set(paths(data.train)) & set(paths(data.val))
    one = build_data("few_shot", toy(), 1, 1)
    assert len(one.train) == 5 and len(one.val) == 5
    assert paths(build_data("few_shot", toy(), 8, 1).train) == paths(data.train)
    assert paths(build_data("few_shot", toy(), 8, 2).train) != paths(data.train)


def test_base_to_novel_protocol():
    data = build_data("base_to_novel", toy(5), 4, 1)
    assert data.classnames == ["class_0", "class_1", "class_2"]
    assert {s.label for s in data.train} == {0, 1, 2} and len(data.train) == 12
    base, novel = data.eval_sets
    assert (base.name, novel.name) == ("base", "novel")
    assert novel.classnames == ["class_3", "class_4"] and len(novel.samples) == 20
    assert {s.label for s in novel.samples} == {0, 1}


def test_cross_dataset_protocol_uses_targets_classes_and_templates():
    target = toy(3, name="other", names=["x", "y", "z"])
    target.templates = ["{} texture."]
    data = build_data("cross_dataset", toy(), 2, 1, [target])
    assert [e.name for e in data.eval_sets] == ["test", "other"]
    assert data.eval_sets[1].classnames == ["x", "y", "z"] and data.eval_sets[1].templates == ["{} texture."]


def test_domain_generalization_requires_subset_of_source_classes():
    subset = toy(2, name="sub", names=["class_3", "class_1"])
    data = build_data("domain_generalization", toy(), 2, 1, [subset])
    assert data.eval_sets[1].classnames == ["class_3", "class_1"]
    with pytest.raises(DatasetError, match="'zebra'.*|.*zebra"):
        build_data("domain_generalization", toy(), 2, 1, [toy(2, name="bad", names=["class_1", "zebra"])])


def test_protocol_errors():
    with pytest.raises(ConfigError, match="few_shot"):
        build_data("many_shot", toy(), 1, 1)
    assert set(protocol_names()) == {"few_shot", "base_to_novel", "cross_dataset", "domain_generalization", "test_time",
                                     "online_test_time",
                                     "multitask", "segmentation"}
    with pytest.raises(ConfigError, match="target"):
        build_data("cross_dataset", toy(), 1, 1)
    with pytest.raises(ConfigError, match="no target"):
        build_data("few_shot", toy(), 1, 1, [toy(name="t")])


def test_test_time_protocol_trains_nothing_and_evaluates_source_and_targets():
    target = toy(3, name="shifted")
    data = build_data("test_time", toy(4), 0, 1, [target])
    assert data.train == [] and data.val == []
    assert [es.name for es in data.eval_sets] == ["test", "shifted"]
    assert data.eval_sets[1].classnames == target.classnames
    assert build_data("test_time", toy(4), None, 1).eval_sets[0].name == "test"  # targets are optional
    with pytest.raises(ConfigError, match="trains nothing"):
        build_data("test_time", toy(4), 16, 1)


def test_class_without_training_images_is_named():
    data = toy(3)
    data.train = [s for s in data.train if s.classname != "class_1"]
    with pytest.raises(DatasetError, match="class_1"):
        build_data("few_shot", data, 4, 1)
    assert build_data("few_shot", data, 0, 1).train == []  # zero-shot runs need no training image
