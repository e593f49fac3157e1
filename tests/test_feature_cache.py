"""The frozen-feature disk cache: keys, validation of entries, concurrent filling, and use by the harness."""
from __future__ import annotations

import csv
import dataclasses
import json
import os
import re
import threading

import lightning as L
import pytest
import torch
from PIL import Image

from vlpt.backbone import ClipBackbone
from vlpt.data.datamodule import CachedFeatureDataModule, PromptDataModule
from vlpt.data.feature_cache import FeatureCache, FeatureCacheWarning, view_seed
from vlpt.data.run_data import EvalSet, ProtocolData
from vlpt.data.samples import Sample
from vlpt.data.transforms import eval_transform, train_transform
from vlpt.eval.harness import Harness
from vlpt.eval.suite import load_suite
from vlpt.results import RecordStore

from test_harness import write_suite


def make_samples(folder, count=6, seed=0) -> list[Sample]:
    generator = torch.Generator().manual_seed(seed)
    folder.mkdir(parents=True, exist_ok=True)
    samples = []
    for i in range(count):
        pixels = (torch.rand(40, 48, 3, generator=generator) * 255).to(torch.uint8).numpy()
        path = folder / f"image_{i}.png"
        Image.fromarray(pixels).save(path)
        samples.append(Sample(str(path), i % 3, f"class{i % 3}"))
    return samples


@pytest.fixture
def setup(tmp_path, tiny_backbone):
    samples = make_samples(tmp_path / "images")
    cfg = tiny_backbone.preprocess_cfg
    transform = eval_transform(tiny_backbone.image_size, cfg["mean"], cfg["std"])
    return FeatureCache(tmp_path / "cache", tiny_backbone, batch_size=4), samples, transform


def test_features_equal_the_backbones_and_are_read_back_not_recomputed(setup, tiny_backbone):
    cache, samples, transform = setup
    features = cache.image_features(samples, transform, "toy", "test")
    images = torch.stack([transform(Image.open(s.path).convert("RGB")) for s in samples])
    with torch.no_grad():
        expected = tiny_backbone.encode_image(images)
    torch.testing.assert_close(features, expected, rtol=1e-4, atol=1e-5)
    again = FeatureCache(cache.folder, tiny_backbone).image_features(samples, transform, "toy", "test")
    assert torch.equal(again, features)
    assert len(cache.computed) == 1 and len(list(cache.folder.glob("*.safetensors"))) == 1


def test_key_changes_with_every_input(setup, tmp_path, tiny_backbone):
    cache, samples, transform = setup
    base = cache.key(samples, transform, "toy", "test", 0)
    cfg = tiny_backbone.preprocess_cfg
    other_backbone = ClipBackbone("vlpt-starter-vit", pretrained=None)  # other random weights
    changed = {
        "dataset": cache.key(samples, transform, "toy2", "test", 0),
        "split": cache.key(samples, transform, "toy", "val", 0),
        "view": cache.key(samples, transform, "toy", "test", 1),
        "transform": cache.key(samples, train_transform(tiny_backbone.image_size, cfg["mean"], cfg["std"]),
                               "toy", "test", 0),
        "sample order": cache.key(samples[::-1], transform, "toy", "test", 0),
        "sample list": cache.key(samples[:-1], transform, "toy", "test", 0),
        "labels": cache.key([dataclasses.replace(samples[0], label=2)] + samples[1:], transform, "toy", "test", 0),
        "corruption": cache.key([dataclasses.replace(samples[0], corruption="gaussian_noise:1")] + samples[1:],
                                transform, "toy", "test", 0),
        "weights": FeatureCache(cache.folder, other_backbone).key(samples, transform, "toy", "test", 0),
    }
    Image.new("RGB", (40, 48), "red").save(samples[0].path)  # the image file itself changes
    os.utime(samples[0].path, ns=(1, 1))
    changed["image file"] = cache.key(samples, transform, "toy", "test", 0)
    for what, key in changed.items():
        assert key.digest() != base.digest(), f"the key ignores the {what}"
    assert len({key.digest() for key in changed.values()}) == len(changed)
    assert cache.key(samples, transform, "toy", "test", 0) == changed["image file"]  # and it is stable
    assert tiny_backbone.state_fingerprint() != other_backbone.state_fingerprint()


def test_truncated_entry_is_detected_and_rebuilt(setup):
    cache, samples, transform = setup
    features = cache.image_features(samples, transform, "toy", "test")
    path = cache.path_for(cache.computed[0])
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.warns(FeatureCacheWarning, match=f"feature cache entry {re.escape(str(path))} is corrupt .*; recomputing it"):
        rebuilt = cache.image_features(samples, transform, "toy", "test")
    assert torch.equal(rebuilt, features)
    assert len(cache.computed) == 2 and not cache.loaded
    assert cache.image_features(samples, transform, "toy", "test") is not None and len(cache.loaded) == 1


def test_stale_entry_is_detected_and_rebuilt(setup):
    cache, samples, transform = setup
    features = cache.image_features(samples, transform, "toy", "test")
    other = cache.image_features(samples[:3], transform, "toy", "val")
    target, source = cache.path_for(cache.computed[0]), cache.path_for(cache.computed[1])
    target.write_bytes(source.read_bytes())  # an entry made for other inputs sits under this key's name
    assert other.shape[0] == 3
    with pytest.warns(FeatureCacheWarning, match=f"{re.escape(str(target))} was made for other inputs; recomputing it"):
        rebuilt = cache.image_features(samples, transform, "toy", "test")
    assert torch.equal(rebuilt, features) and len(cache.computed) == 3


def test_entry_with_altered_values_fails_its_checksum(setup):
    from safetensors.torch import load_file, save_file
    from safetensors import safe_open

    cache, samples, transform = setup
    features = cache.image_features(samples, transform, "toy", "test")
    path = cache.path_for(cache.computed[0])
    with safe_open(str(path), framework="pt") as handle:
        metadata = handle.metadata()
    save_file({"features": load_file(str(path))["features"] + 1}, str(path), metadata=metadata)
    with pytest.warns(FeatureCacheWarning, match=f"{re.escape(str(path))} fails its checksum"):
        assert torch.equal(cache.image_features(samples, transform, "toy", "test"), features)
    assert len(cache.computed) == 2
    assert json.loads(metadata["key"])["dataset"] == "toy"


def test_concurrent_fills_of_one_entry_all_succeed(setup, tiny_backbone):
    cache, samples, transform = setup
    results, start = [], threading.Barrier(4)

    def fill():
        start.wait()
        results.append(FeatureCache(cache.folder, tiny_backbone).image_features(samples, transform, "toy", "test"))

    threads = [threading.Thread(target=fill) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(results) == 4 and all(torch.equal(r, results[0]) for r in results)
    assert [p.name for p in cache.folder.iterdir()] == [cache.path_for(cache.key(samples, transform, "toy", "test",
                                                                                 0)).name]


def test_augmented_views_are_fixed_per_view_and_differ_between_views(setup, tiny_backbone):
    cache, samples, _ = setup
    cfg = tiny_backbone.preprocess_cfg
    augment = train_transform(tiny_backbone.image_size, cfg["mean"], cfg["std"], "crop_flip")
    first = [cache.image_features(samples, augment, "toy", "train", v) for v in range(2)]
    torch.manual_seed(123)  # the global generator does not decide a view
    again = FeatureCache(cache.folder.parent / "other", tiny_backbone, batch_size=4).image_features(
        samples, augment, "toy", "train", 1)
    assert torch.equal(again, first[1])
    assert not torch.allclose(first[0], first[1])


def _protocol(samples) -> ProtocolData:
    return ProtocolData(samples, samples[:3], ["class0", "class1", "class2"], ["a photo of a {}."],
                        [EvalSet("test", samples, ["class0", "class1", "class2"], ["a photo of a {}."])],
                        protocol="few_shot", dataset="toy", shots=2, seed=0)


def test_feature_loaders_follow_the_image_loaders_batches(setup, tiny_backbone):
    cache, samples, transform = setup
    cfg = tiny_backbone.preprocess_cfg
    args = (_protocol(samples), tiny_backbone.image_size, cfg["mean"], cfg["std"])
    images = PromptDataModule(*args, batch_size=4, train_augment="none", seed=3)
    stored = CachedFeatureDataModule(*args, cache=cache, dataset="toy", batch_size=4, train_augment="none", seed=3)
    assert stored.train_views == 1
    for (x, y), (f, z) in zip(images.train_dataloader(), stored.train_dataloader()):
        assert torch.equal(y, z)
        with torch.no_grad():
            torch.testing.assert_close(tiny_backbone.encode_image(x), f, rtol=1e-4, atol=1e-5)
    # the training view of a deterministic transform is the entry of the un-augmented training images
    stored.train_eval_dataloader()
    assert len(cache.computed) == 1 and len(cache.loaded) == 1
    views = CachedFeatureDataModule(*args, cache=cache, dataset="toy", train_views=3, train_augment="flip")
    assert views.train_views == 3 and next(iter(views.train_dataloader()))[0].shape[-1] == tiny_backbone.embed_dim


def test_suite_with_and_without_cache_gives_the_same_results(tmp_path):
    experiment = {"protocol": "few_shot", "dataset": "starter_shapes", "shots": [2], "seeds": [1],
                  "train_augment": "none", "params": {"epochs": 2},
                  "methods": ["zeroshot", "coop_m4", "kgcoop", "linear_probe"]}
    records = {}
    for enabled in (True, False):
        out = tmp_path / f"out-{enabled}"
        path = write_suite(tmp_path, output=str(out), experiments=[experiment],
                           backbone={"model": "vlpt-starter-vit", "pretrained": "vlpt-starter"},
                           feature_cache={"enabled": enabled, "folder": str(tmp_path / "cache")})
        harness = Harness(load_suite(path), progress=False)
        harness.run_all()
        records[enabled] = {r.identity.method: r for r in RecordStore(out / "records").records()}
        if enabled:  # four methods evaluated on one test set: each test image was encoded once
            test_entries = [k for k in harness.feature_cache.computed if k.split == "test"]
            assert len(test_entries) == 1
            assert len([k for k in harness.feature_cache.loaded if k.split == "test"]) == 3
            assert records[True]["coop"].config["feature_cache"] == {"train_views": 1}
    assert records[True].keys() == records[False].keys() == {"zeroshot", "coop", "kgcoop", "linear_probe"}
    assert "feature_cache" not in records[False]["coop"].config
    for method in records[True]:
        cached, plain = records[True][method].metrics["test"], records[False][method].metrics["test"]
        assert cached["n"] == plain["n"]
        assert abs(cached["accuracy"] - plain["accuracy"]) <= 100.0 / plain["n"], method  # at most one image


def test_methods_on_stored_features_score_as_on_images(deep_backbone):
    """Every method served stored features, at its defaults (12 layers: TCP's class tokens enter at layer 8)."""
    tiny_backbone = deep_backbone
    from vlpt.registry import METHODS

    classnames, templates = ["cat", "dog", "red car"], ["a photo of a {}."]
    images = torch.randn(5, 3, tiny_backbone.image_size, tiny_backbone.image_size)
    with torch.no_grad():
        features = tiny_backbone.encode_image(images)
    served = [name for name in METHODS.names() if METHODS.get(name).frozen_image_features]
    assert {"zeroshot", "linear_probe", "coop", "kgcoop", "cocoop"} <= set(served)
    for name in served:
        torch.manual_seed(0)
        method = METHODS.get(name)(tiny_backbone, classnames, templates)
        with torch.no_grad():
            torch.testing.assert_close(method.logits(features), method.logits(images), rtol=1e-4, atol=1e-4)


# ---------------------------------------------------------------- training views: per epoch (default) or N stored


class _Recorder(L.LightningModule):
    """Trains nothing but a scalar; records the (features, labels) each training step is served, by epoch."""

    def __init__(self):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(()))
        self.served: dict[int, list[tuple[torch.Tensor, torch.Tensor]]] = {}

    def training_step(self, batch, batch_idx):
        features, labels = batch
        self.served.setdefault(self.current_epoch, []).append((features.clone(), labels.clone()))
        return (self.weight * features.sum()) ** 2

    def configure_optimizers(self):
        return torch.optim.SGD([self.weight], lr=0.0)


def _fit(loader, epochs: int) -> dict[int, dict[int, torch.Tensor]]:
    """Per epoch, the features served for each label (the labels name the images)."""
    recorder = _Recorder()
    trainer = L.Trainer(max_epochs=epochs, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, use_distributed_sampler=False)
    trainer.fit(recorder, loader)
    served = {}
    for epoch, batches in recorder.served.items():
        rows = {int(label): row for features, labels in batches for row, label in zip(features, labels)}
        served[epoch] = rows
    return served


def _crop_features(backbone, sample, transform, epoch: int, seed: int) -> torch.Tensor:
    """The frozen image tower on the deterministic training crop of ``sample`` for (epoch, run seed)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(view_seed(sample.seed_key, epoch, seed))
        image = transform(Image.open(sample.path).convert("RGB"))
    with torch.no_grad():
        return backbone.encode_image(image[None])[0]


def test_default_training_views_are_a_new_stored_crop_per_image_and_epoch_shared_by_methods(tmp_path, tiny_backbone):
    samples = [dataclasses.replace(s, label=i) for i, s in enumerate(make_samples(tmp_path / "images"))]
    cfg = tiny_backbone.preprocess_cfg
    args = (_protocol(samples), tiny_backbone.image_size, cfg["mean"], cfg["std"])
    cache = FeatureCache(tmp_path / "cache", tiny_backbone, batch_size=4)
    module = CachedFeatureDataModule(*args, cache=cache, dataset="toy", batch_size=4, seed=7)  # defaults
    assert module.train_views == "per_epoch"
    served = _fit(module.train_dataloader(), epochs=3)
    assert sorted(served) == [0, 1, 2] and all(sorted(rows) == list(range(6)) for rows in served.values())
    for epoch, rows in served.items():
        for i, sample in enumerate(samples):
            expected = _crop_features(tiny_backbone, sample, module.train_tf, epoch, seed=7)
            torch.testing.assert_close(rows[i], expected, rtol=1e-4, atol=1e-5)
    for i in range(6):  # a new crop every epoch
        assert not torch.allclose(served[0][i], served[1][i]) and not torch.allclose(served[1][i], served[2][i])
    # computed once per epoch, in one stored entry per epoch for this seed
    assert [(k.split, k.view, k.seed) for k in cache.computed] == [("train", 0, 7), ("train", 1, 7), ("train", 2, 7)]
    assert not cache.loaded

    # a second method on the same images and seed (a new cache object, as in a later run) computes nothing
    other = FeatureCache(cache.folder, tiny_backbone, batch_size=4)
    second = CachedFeatureDataModule(*args, cache=other, dataset="toy", batch_size=4, seed=7)
    again = _fit(second.train_dataloader(), epochs=3)
    assert not other.computed and [k.view for k in other.loaded] == [0, 1, 2]
    assert all(torch.equal(again[e][i], served[e][i]) for e in range(3) for i in range(6))
    # another seed draws other crops (as another run of the reference would), into entries of its own
    third = FeatureCache(cache.folder, tiny_backbone, batch_size=4)
    reseeded = _fit(CachedFeatureDataModule(*args, cache=third, dataset="toy", batch_size=4, seed=8).train_dataloader(),
                    epochs=1)
    assert [(k.view, k.seed) for k in third.computed] == [(0, 8)]
    assert not torch.allclose(reseeded[0][0], served[0][0])


def test_per_epoch_entries_are_not_the_stored_views_of_other_settings(setup, tiny_backbone):
    cache, samples, _ = setup
    cfg = tiny_backbone.preprocess_cfg
    augment = train_transform(tiny_backbone.image_size, cfg["mean"], cfg["std"])
    fixed, epoch = cache.key(samples, augment, "toy", "train", 0), cache.key(samples, augment, "toy", "train", 0, 1)
    assert fixed.digest() != epoch.digest() and cache.path_for(fixed) != cache.path_for(epoch)
    assert ".s1-e0." in cache.path_for(epoch).name and ".v0." in cache.path_for(fixed).name
    # a key without a seed (or a mixed precision) leaves it out of its digest; format 2 entries (views seeded by
    # the image's key within the data root) are never taken for format 1 ones (seeded by its absolute path)
    import hashlib
    fields = {k: v for k, v in dataclasses.asdict(fixed).items() if k not in ("seed", "precision")}
    digests = {f: hashlib.blake2b(json.dumps({**fields, "format": f}, sort_keys=True).encode(), digest_size=12).hexdigest()
               for f in ("1", "2")}
    assert fixed.digest() == digests["2"] != digests["1"]


def test_a_number_of_train_views_stores_that_many_views_and_draws_one_per_epoch(tmp_path, tiny_backbone):
    samples = [dataclasses.replace(s, label=i) for i, s in enumerate(make_samples(tmp_path / "images"))]
    cfg = tiny_backbone.preprocess_cfg
    args = (_protocol(samples), tiny_backbone.image_size, cfg["mean"], cfg["std"])
    cache = FeatureCache(tmp_path / "cache", tiny_backbone, batch_size=4)
    module = CachedFeatureDataModule(*args, cache=cache, dataset="toy", batch_size=4, seed=7, train_views=2)
    assert module.train_views == 2
    torch.manual_seed(0)
    served = _fit(module.train_dataloader(), epochs=6)
    assert [(k.view, k.seed) for k in cache.computed] == [(0, None), (1, None)]  # stored before training
    views = [cache.image_features(samples, module.train_tf, "toy", "train", v) for v in range(2)]
    drawn = set()
    for rows in served.values():
        for i, row in rows.items():
            matches = [v for v in range(2) if torch.equal(row, views[v][i])]
            assert len(matches) == 1
            drawn.add(matches[0])
    assert drawn == {0, 1}
    assert len(cache.computed) == 2  # nothing more was computed while training


def test_a_suite_encodes_each_epochs_training_crops_once_for_all_its_methods(tmp_path):
    """CoOp and KgCoOp on the same few-shot images and seed: the first computes each epoch's crops, the second
    reads them; records say which training views ran, and a number of views shows on the leaderboard."""
    experiment = {"protocol": "few_shot", "dataset": "starter_shapes", "shots": [2], "seeds": [1],
                  "params": {"epochs": 2}, "methods": ["coop_m4", "kgcoop", "zeroshot", "linear_probe"]}
    backbone = {"model": "vlpt-starter-vit", "pretrained": "vlpt-starter"}
    cache = str(tmp_path / "cache")
    runs = {}
    for name, settings in (("epochs", {"folder": cache}), ("views", {"folder": cache, "train_views": 2})):
        out = tmp_path / name
        out.mkdir()
        path = write_suite(tmp_path / name, output=str(out), data_root=str(tmp_path / "data"),
                           experiments=[experiment], backbone=backbone, feature_cache=settings)
        harness = Harness(load_suite(path), progress=False)
        harness.run_all()
        runs[name] = {r.identity.method: r for r in RecordStore(out / "records").records()}
        computed, loaded = ([(k.view, k.seed) for k in keys if "RandomResizedCrop" in k.transform]  # training views
                            for keys in (harness.feature_cache.computed, harness.feature_cache.loaded))
        if name == "epochs":  # one entry per epoch for seed 1, computed by the first method, read by the second
            assert computed == loaded == [(0, 1), (1, 1)]
        else:  # two stored views, shared by the two methods too; none of the per-epoch entries is taken for them
            assert computed == loaded == [(0, None), (1, None)]
    epochs, views = runs["epochs"], runs["views"]
    unused = {"zeroshot": {"train_views": None}, "linear_probe": {"train_views": None}}  # no training views drawn
    assert {m: r.config["feature_cache"] for m, r in epochs.items()} == {
        "coop": {"train_views": "per_epoch"}, "kgcoop": {"train_views": "per_epoch"}, **unused}
    assert {m: r.config["feature_cache"] for m, r in views.items()} == {
        "coop": {"train_views": 2}, "kgcoop": {"train_views": 2}, **unused}
    settings = {name: {row["settings"] for row in csv.DictReader((tmp_path / name / "leaderboard.csv").open())}
                for name in runs}
    assert settings == {"epochs": {""}, "views": {"train_views=2", ""}}  # "": zero-shot and linear probe rows
