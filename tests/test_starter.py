"""The starter world: reproducible pretraining, deterministic datasets, and a task where prompts learn."""
from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pytest
import yaml

from vlpt.data.datasets.starter import generate_starter_dataset, load_starter
from vlpt.eval.harness import Harness
from vlpt.eval.suite import load_suite
from vlpt.paths import STARTER_WEIGHTS
from vlpt.starter import synthetic
from vlpt.starter.pretrain import build_pretraining_set, pretrain_starter


def _digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.slow  # pretrains twice
def test_pretraining_is_reproducible_and_excludes_held_out_data(tmp_path):
    first = pretrain_starter(tmp_path / "a.safetensors", steps=3, batch_size=32, warmup=1, log_every=10)
    pretrain_starter(tmp_path / "b.safetensors", steps=3, batch_size=32, warmup=1, log_every=10)
    assert _digest(tmp_path / "a.safetensors") == _digest(tmp_path / "b.safetensors")
    assert first["steps"] == 3 and "vlpt pretrain --steps 3" in first["command"]
    _, captions = build_pretraining_set()
    seen = {c[0] for c in captions}
    assert not any(name in caption for name in synthetic.HELD_OUT_SHAPES for caption in seen)


def test_starter_datasets_are_deterministic_disjoint_and_ordered(tmp_path):
    a = load_starter("starter_shapes", tmp_path / "a")
    b = load_starter("starter_shapes", tmp_path / "b")
    assert a.classnames == [c.replace(" ", "_") for c in synthetic.SHAPE_CLASSES]
    for split in ("train", "val", "test"):
        left, right = getattr(a, split), getattr(b, split)
        assert [s.label for s in left] == [s.label for s in right]
        assert all(_digest(Path(p.path)) == _digest(Path(q.path)) for p, q in zip(left[:20], right[:20]))
    images = {split: {_digest(Path(s.path)) for s in getattr(a, split)} for split in ("train", "val", "test")}
    assert not images["train"] & images["test"] and not images["val"] & images["test"]


def test_starter_digits_test_split_is_the_pretraining_hold_out(tmp_path):
    digits = load_starter("starter_digits", tmp_path)
    assert (len(digits.train), len(digits.val), len(digits.test)) == (1077, 360, 360)
    assert digits.classnames == synthetic.DIGIT_NAMES


def test_interrupted_generation_is_redone(tmp_path):
    folder = generate_starter_dataset("starter_rendered_digits", tmp_path)
    shutil.rmtree(folder)
    (folder.with_name(folder.name + ".tmp") / "train").mkdir(parents=True)  # a generation cut short
    assert len(load_starter("starter_rendered_digits", tmp_path).test) == 1000


@pytest.mark.skipif(not STARTER_WEIGHTS.is_file(), reason="starter weights not built")
def test_prompt_learning_beats_zero_shot_on_the_shifted_digits(tmp_path):
    suite = {
        "name": "learning", "backbone": {"model": "vlpt-starter-vit", "pretrained": "vlpt-starter"},
        "data_root": str(tmp_path / "data"), "output": str(tmp_path / "out"),
        "experiments": [{"protocol": "few_shot", "dataset": "starter_rendered_digits", "train_augment": "none",
                         "shots": [16], "seeds": [1], "params": {"epochs": 60},
                         "methods": ["zeroshot", "coop_m4", "kgcoop"]}],
    }
    path = tmp_path / "suite.yaml"
    path.write_text(yaml.safe_dump(suite))
    harness = Harness(load_suite(path), progress=False)
    harness.run_all()
    accuracy = {r.identity.method: r.metrics["test"]["accuracy"] for r in harness.store.records()}
    assert accuracy["coop"] > accuracy["zeroshot"] + 3.0
    assert accuracy["kgcoop"] > accuracy["zeroshot"]


def test_parallel_writers_of_one_starter_dataset_all_succeed(tmp_path):
    import threading

    from vlpt.data.datasets.starter import generate_starter_dataset, load_starter

    errors, start = [], threading.Barrier(3)

    def write():
        start.wait()
        try:
            generate_starter_dataset("starter_digits", tmp_path)
        except Exception as exc:  # noqa: BLE001 - any failure of a writer is the finding
            errors.append(exc)

    threads = [threading.Thread(target=write) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    assert [p.name for p in (tmp_path / "starter").iterdir()] == ["starter_digits"]  # no temporary folder left
    splits = load_starter("starter_digits", tmp_path)
    assert len(splits.train) > 0 and len(splits.test) > 0
