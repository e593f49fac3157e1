"""Check a suite's data before any long work starts.

``vlpt bench`` validates the suite's YAML when it loads it (unknown keys, wrong types, unknown
methods, datasets and protocols: :mod:`vlpt.eval.suite`). What only the data can tell is checked
here, for every run still to do, before the first initialisation is meta-learned or the first run
trains: each dataset loads and agrees with its own class list (:mod:`vlpt.data.consistency`), every
run's few-shot sampling leaves no class empty, the images a run trains on decode, and the images it is
evaluated on (and every segmentation mask) decode too, JPEGs at reduced scale (cheaper, and a truncated
stream still fails). The first problem is raised as a DatasetError naming the run, the file and what is
wrong.
"""
from __future__ import annotations

from collections.abc import Iterable

from PIL import Image

from vlpt.data.image_dataset import load_rgb
from vlpt.errors import ConfigError, DatasetError
from vlpt.eval.suite import Run
from vlpt.protocols import get_protocol


def describe(run: Run) -> str:
    """A run in words, for error messages."""
    return f"run {run.identity.run_id} ({run.identity.describe()})"


def verify_image(path: str) -> None:
    """Decode an image file cheaply (JPEGs at reduced scale, which still reads every byte of the stream),
    so a truncated or corrupt file fails here; DatasetError names the file."""
    try:
        with Image.open(path) as image:
            image.draft("RGB", (32, 32))
            image.load()
    except FileNotFoundError as exc:
        raise DatasetError(f"image file {path} does not exist") from exc
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        raise DatasetError(f"image file {path} cannot be decoded: {exc}") from exc


def images_of(harness, run: Run) -> tuple[list[str], list[str]]:
    """The run's images to decode (what it trains on) and to verify (what it is evaluated on, and masks).
    Building the run's data samples its few-shot sets, so an empty class fails here."""
    protocol = get_protocol(run.identity.protocol)
    return protocol.images(protocol.build(harness, run, harness.training_shots(run)))


def check_runs(harness, runs: Iterable[Run]) -> int:
    """Check the data of ``runs`` (see the module docstring); returns the number of image files checked."""
    decode: dict[str, Run] = {}
    verify: dict[str, Run] = {}
    for run in runs:
        try:
            trained, evaluated = images_of(harness, run)
        except (DatasetError, ConfigError) as exc:
            raise type(exc)(f"{describe(run)}: {exc}") from exc
        for path in trained:
            decode.setdefault(path, run)
        for path in evaluated:
            verify.setdefault(path, run)
    verify = {path: run for path, run in verify.items() if path not in decode}
    for paths, check in ((decode, load_rgb), (verify, verify_image)):
        for path, run in paths.items():
            try:
                check(path)
            except DatasetError as exc:
                raise DatasetError(f"{describe(run)}: {exc}") from exc
    return len(decode) + len(verify)
