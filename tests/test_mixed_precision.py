"""Mixed precision: evaluation and stored features run under the autocast training ran under, and the record
says which precision ran."""
from __future__ import annotations

import torch
from PIL import Image

from vlpt.data.feature_cache import FeatureCache
from vlpt.data.transforms import eval_transform
from vlpt.eval.harness import Harness
from vlpt.eval.suite import load_suite

from test_feature_cache import make_samples
from test_harness import write_suite


def test_evaluation_runs_in_the_precision_training_ran_in(tmp_path, monkeypatch):
    import vlpt.protocols.classification as classification

    seen = []
    evaluate = classification.evaluate_classifier

    def spy(*args, **kwargs):
        seen.append((torch.is_autocast_enabled("cpu"), torch.get_autocast_dtype("cpu")))
        return evaluate(*args, **kwargs)

    monkeypatch.setattr(classification, "evaluate_classifier", spy)
    records = {}
    for precision in ("32-true", "bf16-mixed"):
        (tmp_path / precision).mkdir()
        suite = write_suite(tmp_path / precision, trainer={"accelerator": "cpu", "precision": precision},
                            experiments=[{"protocol": "few_shot", "dataset": "starter_shapes", "shots": [1],
                                          "seeds": [1], "params": {"epochs": 1}, "methods": ["coop"]}])
        harness = Harness(load_suite(suite), progress=False)
        records[precision] = harness.execute(harness.pending()[0])
    assert seen == [(False, torch.get_autocast_dtype("cpu")), (True, torch.bfloat16)]
    assert [r.config["trainer"]["precision"] for r in records.values()] == ["32-true", "bf16-mixed"]
    assert all(r.config["determinism"]["deterministic"] for r in records.values())  # CPU autocast is deterministic


def test_stored_features_are_computed_and_keyed_in_the_runs_precision(tmp_path, tiny_backbone):
    samples = make_samples(tmp_path / "images", count=4)
    cfg = tiny_backbone.preprocess_cfg
    transform = eval_transform(tiny_backbone.image_size, cfg["mean"], cfg["std"])
    fp32 = FeatureCache(tmp_path / "cache", tiny_backbone)
    bf16 = FeatureCache(tmp_path / "cache", tiny_backbone, precision="bf16-mixed")
    full, mixed = (cache.image_features(samples, transform, "toy", "test") for cache in (fp32, bf16))
    assert len(fp32.computed) == len(bf16.computed) == 1 and fp32.computed[0] != bf16.computed[0]
    images = torch.stack([transform(Image.open(s.path).convert("RGB")) for s in samples])
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        expected = tiny_backbone.encode_image(images).float()
    assert torch.equal(mixed, expected) and not torch.equal(mixed, full)
    torch.testing.assert_close(mixed, full, rtol=0.05, atol=0.05)


def test_tpt_scales_its_loss_under_fp16_autocast_and_stays_episodic(tiny_backbone, monkeypatch):
    """Under 16-mixed, each image's step goes through a fresh loss scaler (the reference's GradScaler); nothing
    carries over from one image to the next."""
    from vlpt.methods.tpt import TPT

    scaled = []
    scale = torch.amp.GradScaler.scale
    monkeypatch.setattr(torch.amp.GradScaler, "scale", lambda self, loss: scaled.append(self) or scale(self, loss))
    method = TPT(tiny_backbone, ["a", "b", "c"], ["a photo of a {}."], TPT.Config(views=8, lr=0.05, steps=2))
    generator = torch.Generator().manual_seed(0)
    views = [torch.randn(8, 3, 32, 32, generator=generator) for _ in range(2)]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        method.adapt_and_predict(views[0])
    assert not scaled  # bf16 needs no scaler
    with torch.autocast("cpu", dtype=torch.float16):
        method.start_episodes()
        start = method.context.ctx.detach().clone()
        after_first = [method.adapt_and_predict(v) for v in views][1]
        alone = method.adapt_and_predict(views[1])
        batched = method.adapt_batch(*zip(*[method.encode_views(v) for v in views]))
    assert len(scaled) == 3 * 2 + 2 and len({id(s) for s in scaled}) == 4  # a fresh scaler per image / batch
    assert torch.equal(after_first, alone) and torch.equal(method.context.ctx, start)
    torch.testing.assert_close(batched[1], alone, rtol=2e-2, atol=2e-2)
