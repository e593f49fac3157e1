"""DiffTPT's diffusion views: settings keys, the tiny offline pipeline, the view store, generation and the CLI."""
from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import torch
from PIL import Image

from vlpt.data.samples import Sample
from vlpt.errors import ConfigError, DatasetError
from vlpt.tta.diffusion import DiffusionSettings, DiffusionViewGenerator, build_tiny_pipeline, load_pipeline
from vlpt.tta.generate import generate_views, parse_shard, read_views
from vlpt.tta.store import CorruptViewError, ViewStore, image_digest

TINY = DiffusionSettings(pipeline="tiny-random", inference_steps=2, views=3)


class CountingGenerator(DiffusionViewGenerator):
    """The real generator, recording the digest of every image it generates views of."""

    def __init__(self, settings, device="cpu", chunk=16):
        super().__init__(settings, device, chunk)
        self.calls: list[str] = []

    def generate(self, image, digest):
        self.calls.append(digest)
        return super().generate(image, digest)


def _pixels(images) -> list[np.ndarray]:
    return [np.asarray(image) for image in images]


def _same(a, b) -> bool:
    return len(a) == len(b) and all(np.array_equal(x, y) for x, y in zip(_pixels(a), _pixels(b)))


@pytest.fixture(autouse=True)
def one_thread():
    """The tiny pipeline gains nothing from threads, and a busy CPU makes torch's thread pool crawl."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def samples(tmp_path) -> list[Sample]:
    """Five PNG samples; the last has the same pixels as the first (another file)."""
    rng = np.random.default_rng(0)
    folder = tmp_path / "images"
    folder.mkdir()
    arrays = [rng.integers(0, 256, (12 + i, 16, 3), dtype=np.uint8) for i in range(4)]
    arrays.append(arrays[0])
    out = []
    for i, array in enumerate(arrays):
        path = folder / f"img{i}.png"
        Image.fromarray(array).save(path)
        out.append(Sample(str(path), i % 2, f"class{i % 2}"))
    return out


def _image(sample: Sample) -> Image.Image:
    with Image.open(sample.path) as image:
        return image.convert("RGB")


def test_tiny_pipeline_views_are_deterministic_per_image_and_seed():
    image = Image.fromarray(np.random.default_rng(1).integers(0, 256, (20, 24, 3), dtype=np.uint8))
    digest = image_digest(image)
    views = DiffusionViewGenerator(TINY).generate(image, digest)
    assert len(views) == TINY.views
    assert all(v.mode == "RGB" and v.size == (32, 32) for v in views)
    assert not np.array_equal(*_pixels(views[:2]))  # every view has its own noise
    assert _same(views, DiffusionViewGenerator(TINY).generate(image, digest))
    assert not _same(views, DiffusionViewGenerator(replace(TINY, seed=1)).generate(image, digest))
    assert not _same(views, DiffusionViewGenerator(TINY).generate(image, "0" * 64))
    # chunking changes the pipeline batches, not the views (up to float rounding)
    chunked = DiffusionViewGenerator(TINY, chunk=2).generate(image, digest)
    assert all(np.abs(a.astype(int) - b.astype(int)).max() <= 1 for a, b in zip(_pixels(views), _pixels(chunked)))


def test_image_digest_is_content_not_file():
    a = Image.new("RGB", (8, 8), (10, 20, 30))
    assert image_digest(a) == image_digest(a.copy())
    assert image_digest(a) != image_digest(Image.new("RGB", (8, 8), (10, 20, 31)))
    assert image_digest(a) != image_digest(Image.new("RGB", (4, 16), (10, 20, 30)))  # same bytes, other size
    assert image_digest(a) != image_digest(a.convert("RGBA"))


def test_settings_validate_and_every_field_changes_the_key(tmp_path, monkeypatch):
    base = DiffusionSettings()
    assert (base.pipeline, base.revision, base.guidance_scale, base.inference_steps, base.views) == \
        ("lambdalabs/sd-image-variations-diffusers", "v2.0", 3.0, 50, 63)  # DiffTPT's reference: 63
    assert len(base.key()) == 16 and base.key() == DiffusionSettings().key()
    changes = dict(pipeline="tiny-random", revision="main", guidance_scale=4.0, inference_steps=10, views=8,
                   seed=1, dtype="fp16")
    keys = {base.key()} | {replace(base, **{field: value}).key() for field, value in changes.items()}
    assert len(keys) == len(changes) + 1
    # revision means nothing for tiny-random or a local folder; a folder is keyed by its absolute path
    assert replace(TINY, revision="other").key() == TINY.key()
    (tmp_path / "pipe").mkdir()
    local = DiffusionSettings(pipeline=str(tmp_path / "pipe"))
    assert local.canonical()["revision"] is None
    monkeypatch.chdir(tmp_path)
    assert replace(local, pipeline="pipe").key() == replace(local, pipeline="./pipe/").key() == local.key()
    assert replace(local, pipeline="./absent").canonical()["pipeline"] == str((tmp_path / "absent").resolve())
    for field, bad in [("views", 0), ("inference_steps", 0), ("guidance_scale", -1.0),
                       ("guidance_scale", float("nan")), ("dtype", "bf16"), ("pipeline", ""), ("seed", 1.5)]:
        with pytest.raises(ValueError, match=field):
            DiffusionSettings(**{field: bad})


def test_store_roundtrip_and_status(tmp_path):
    store = ViewStore(tmp_path / "store")
    images = [Image.new("RGB", (8, 8), (i * 40, 0, 0)) for i in range(TINY.views)]
    digest = image_digest(images[0])
    assert store.status(digest, TINY) == "missing" and store.load(digest, TINY) is None
    folder = store.save(digest, TINY, images)
    assert folder == tmp_path / "store" / TINY.key() / digest[:2] / digest
    assert sorted(p.name for p in folder.iterdir()) == ["000.png", "001.png", "002.png", "manifest.json"]
    assert json.loads((tmp_path / "store" / TINY.key() / "settings.json").read_text()) == TINY.canonical()
    assert store.status(digest, TINY) == "ok"
    assert _same(store.load(digest, TINY), images)
    assert store.status(digest, replace(TINY, seed=5)) == "missing"
    with pytest.raises(ValueError, match="expected 3 views"):
        store.save(digest, TINY, images[:2])


def test_second_run_reuses_the_store_and_loads_no_pipeline(samples, tmp_path):
    store = ViewStore(tmp_path / "store")
    first = CountingGenerator(TINY)
    report = generate_views(samples, store, TINY, generator=first)
    assert (report.generated, report.reused, report.regenerated, report.skipped_other_shards) == (4, 1, 0, 0)
    assert len(first.calls) == len(set(first.calls)) == 4  # the duplicate image is generated once

    second = CountingGenerator(TINY)
    report = generate_views(samples, store, TINY, generator=second)
    assert (report.generated, report.reused, report.regenerated) == (0, len(samples), 0)
    assert second.calls == [] and not second.loaded
    image = _image(samples[1])
    assert _same(read_views(store, image, TINY), DiffusionViewGenerator(TINY).generate(image, image_digest(image)))


def test_changed_settings_generate_again(samples, tmp_path):
    store = ViewStore(tmp_path / "store")
    generate_views(samples[:2], store, TINY)
    for change in (dict(guidance_scale=1.5), dict(inference_steps=3), dict(views=2), dict(seed=7)):
        settings = replace(TINY, **change)
        generator = CountingGenerator(settings)
        report = generate_views(samples[:2], store, settings, generator=generator)
        assert report.generated == 2 and len(generator.calls) == 2, change
    assert len([p for p in store.root.iterdir() if p.is_dir()]) == 5
    with pytest.raises(ConfigError, match="differ"):
        generate_views(samples, store, TINY, generator=DiffusionViewGenerator(replace(TINY, seed=7)))


@pytest.mark.parametrize("damage", ["garbage", "other_image", "deleted"])
def test_corrupt_view_is_detected_and_regenerated(samples, tmp_path, damage):
    store = ViewStore(tmp_path / "store")
    generate_views(samples[:2], store, TINY)
    image = _image(samples[1])
    digest = image_digest(image)
    stored = store.load(digest, TINY)
    target = store.folder(digest, TINY) / "001.png"
    if damage == "garbage":
        target.write_bytes(b"not a png at all")
    elif damage == "other_image":
        Image.new("RGB", (32, 32), (1, 2, 3)).save(target)
    else:
        target.unlink()
    assert store.status(digest, TINY) == "corrupt"
    with pytest.raises(CorruptViewError, match="001.png"):
        store.load(digest, TINY)
    with pytest.raises(DatasetError, match="vlpt tta generate"):
        read_views(store, image, TINY)

    with pytest.warns(UserWarning, match="corrupt"):
        report = generate_views(samples[:2], store, TINY)
    assert (report.generated, report.reused, report.regenerated) == (0, 1, 1)
    assert store.status(digest, TINY) == "ok"
    views = read_views(store, image, TINY)
    assert len(views) == TINY.views and all(v.mode == "RGB" for v in views)
    assert _same(views, stored)


def test_unreadable_manifest_is_corrupt(samples, tmp_path):
    store = ViewStore(tmp_path / "store")
    generate_views(samples[:1], store, TINY)
    digest = image_digest(_image(samples[0]))
    (store.folder(digest, TINY) / "manifest.json").write_text("{not json")
    assert store.status(digest, TINY) == "corrupt"
    with pytest.raises(CorruptViewError, match="manifest.json"):
        store.load(digest, TINY)


def test_interrupted_writes_count_as_missing_and_are_completed(samples, tmp_path):
    store = ViewStore(tmp_path / "store")
    first, second = (image_digest(_image(s)) for s in samples[:2])
    # an interrupted save: a hidden temporary folder with some views and no manifest
    leftover = store.folder(first, TINY).parent / f".{first}.interrupted.tmp"
    leftover.mkdir(parents=True)
    Image.new("RGB", (32, 32)).save(leftover / "000.png")
    # an image folder whose manifest was never written
    partial = store.folder(second, TINY)
    partial.mkdir(parents=True)
    Image.new("RGB", (32, 32)).save(partial / "000.png")
    assert store.status(first, TINY) == store.status(second, TINY) == "missing"
    assert store.load(second, TINY) is None

    report = generate_views(samples[:2], store, TINY)
    assert (report.generated, report.reused, report.regenerated) == (2, 0, 0)
    assert store.status(first, TINY) == store.status(second, TINY) == "ok"
    assert not leftover.exists()
    assert not [p for p in store.root.rglob(".*") if p.name != "settings.json"]


def test_shards_cover_every_sample_once_and_match_a_full_run(samples, tmp_path):
    sharded, full = ViewStore(tmp_path / "sharded"), ViewStore(tmp_path / "full")
    seen = []
    reports = []
    for index in range(2):
        generator = CountingGenerator(TINY)
        reports.append(generate_views(samples, sharded, TINY, shard=(index, 2), generator=generator))
        seen += generator.calls
    assert [r.skipped_other_shards for r in reports] == [2, 3]
    assert [r.generated + r.reused for r in reports] == [3, 2]
    # samples 0 and 4 hold the same image and both fall in shard 0: generated once
    assert sorted(seen) == sorted({image_digest(_image(s)) for s in samples})
    generate_views(samples, full, TINY)

    def contents(store):
        return {p.relative_to(store.root): p.read_bytes() for p in store.root.rglob("*") if p.is_file()}

    assert contents(sharded) == contents(full)
    with pytest.raises(ConfigError, match="I/N"):
        generate_views(samples, sharded, TINY, shard=(2, 2))


def test_parse_shard():
    assert parse_shard("2/4") == (2, 4) and parse_shard("0/1") == (0, 1)
    for bad in ("4/4", "-1/2", "1", "a/b", "1/0", "", "1/2/3"):
        with pytest.raises(ConfigError, match="I/N"):
            parse_shard(bad)


def test_read_views_of_a_missing_image_says_how_to_generate(tmp_path):
    store = ViewStore(tmp_path / "store")
    image = Image.new("RGB", (8, 8), (5, 6, 7))
    with pytest.raises(DatasetError, match="vlpt tta generate") as info:
        read_views(store, image, TINY)
    message = str(info.value)
    assert image_digest(image) in message and str(store.root) in message and "--pipeline tiny-random" in message


def test_local_pipeline_folder_round_trip(samples, tmp_path):
    folder = tmp_path / "tiny_pipeline"
    build_tiny_pipeline().save_pretrained(folder)
    local = replace(TINY, pipeline=str(folder))
    assert local.key() != TINY.key()
    image = _image(samples[0])
    digest = image_digest(image)
    views = DiffusionViewGenerator(local).generate(image, digest)
    # same weights, same views: a reloaded model's tensors may take other CPU kernels, so a pixel may round
    # to the neighbouring level, never further
    reloaded = DiffusionViewGenerator(TINY).generate(image, digest)
    assert len(views) == len(reloaded)
    assert all(np.abs(x.astype(int) - y.astype(int)).max() <= 1 for x, y in zip(_pixels(views), _pixels(reloaded)))
    store = ViewStore(tmp_path / "store")
    assert generate_views(samples[:2], store, local).generated == 2

    (folder / "model_index.json").unlink()
    with pytest.raises(ConfigError, match=f"{folder}.*model_index.json"):
        load_pipeline(local)
    with pytest.raises(ConfigError, match="does not exist"):
        load_pipeline(replace(TINY, pipeline=str(tmp_path / "absent")))


def test_pipeline_load_failures_are_config_errors(monkeypatch):
    from diffusers import StableDiffusionImageVariationPipeline

    def offline(*args, **kwargs):
        raise OSError("Couldn't connect to the Hub")

    monkeypatch.setattr(StableDiffusionImageVariationPipeline, "from_pretrained", offline)
    with pytest.raises(ConfigError, match="lambdalabs/sd-image-variations-diffusers.*network.*local pipeline folder"):
        load_pipeline(DiffusionSettings())
    with pytest.raises(ConfigError, match="fp16 needs a CUDA device"):
        DiffusionViewGenerator(replace(TINY, dtype="fp16"), device="cpu")


def test_cli_generates_then_reuses(tmp_path, capsys):
    from vlpt.cli import main

    argv = ["tta", "generate", "starter_digits", "--limit", "3", "--pipeline", "tiny-random", "--steps", "2",
            "--views", "2", "--data-root", str(tmp_path / "data"), "--device", "cpu"]
    assert main(argv) == 0
    assert "generated 3, reused 0" in capsys.readouterr().out
    settings = DiffusionSettings(pipeline="tiny-random", inference_steps=2, views=2)
    store_root = tmp_path / "data" / "generated_views"
    assert (store_root / settings.key() / "settings.json").is_file()
    assert main(argv) == 0
    assert "generated 0, reused 3" in capsys.readouterr().out
    assert main(argv + ["--store", str(tmp_path / "other"), "--shard", "1/2"]) == 0
    assert "generated 1, reused 0, regenerated 0, other shards 2" in capsys.readouterr().out

    assert main(argv + ["--shard", "3/2"]) == 2
    assert "shard '3/2'" in capsys.readouterr().err
    assert main(argv + ["--views", "0"]) == 2
    assert "views must be an integer >= 1" in capsys.readouterr().err
