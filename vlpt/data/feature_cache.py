"""A disk cache of frozen image features: encode each image (or augmented view) once, reuse it everywhere.

Methods that see images only through the frozen, unprompted image tower (zero-shot, linear probe,
CoOp, KgCoOp, CoCoOp: ``PromptMethod.frozen_image_features``) need nothing but ``encode_image`` of
each image. Those features are computed once per (backbone, weights, samples, transform, view) and
stored as one safetensors file, so every method, seed and suite that evaluates on the same test set
encodes each test image once, and training text-prompt methods runs on stored features of augmented
views of the training images (view 0 is the only view of a deterministic transform).

A random transform's view draws its randomness from a generator seeded by the view index and the
image's file path (and the run seed, when one is given), so a view is the same in every run that asks
for it. Training by default stores one view per epoch and run seed (``seed`` = the run's seed, ``view``
= the epoch): every epoch sees a fresh crop of every image, as the reference's data loader draws one,
and every method trained on the same images with the same seed reads the same stored crops.

Every entry holds its full key and a checksum in the file's metadata: an entry whose key or size does
not match (stale) or that cannot be read (truncated, corrupt) is reported (FeatureCacheWarning, naming
the file) and recomputed and replaced. Entries are
written to a private temporary file and renamed into place, so runs filling the cache at once never
read a partial file; two writers of one entry write the same features (a view entry's encoding seconds
aside) and the last rename wins.
"""
from __future__ import annotations

import hashlib
import json
import os
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Sequence

import torch
from torch.utils.data import DataLoader, Dataset

from vlpt.backbone.precision import MIXED_PRECISION, autocast_for
from vlpt.data.image_dataset import load_sample
from vlpt.data.samples import Sample
from vlpt.results.store import writer_temp_path

#: "2": random views are seeded by the image key within the data root, no longer by its absolute path
FORMAT_VERSION = "2"


class FeatureCacheWarning(UserWarning):
    """A feature cache entry was corrupt or stale and is being recomputed."""


def default_cache_folder() -> Path:
    """``$VLPT_CACHE`` if set, else ``~/.cache/vlpt/features``."""
    return Path(os.environ.get("VLPT_CACHE", "~/.cache/vlpt/features")).expanduser()


def samples_digest(samples: Sequence[Sample]) -> str:
    """A hash of the sample list: order, paths, seed keys, labels, corruptions, and each file's size and mtime."""
    digest = hashlib.blake2b(digest_size=16)
    for sample in samples:
        stat = os.stat(sample.path)
        digest.update(f"{sample.path}|{sample.seed_key}|{sample.label}|{sample.corruption}|{stat.st_size}|{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def _bytes(tensor: torch.Tensor) -> bytes:
    return tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()


def tensor_checksum(tensor: torch.Tensor) -> str:
    """A hash of a tensor's values (stored with each entry, checked when it is read)."""
    return hashlib.blake2b(_bytes(tensor), digest_size=16).hexdigest()


@dataclass(frozen=True)
class FeatureKey:
    """Everything a stored feature tensor depends on."""

    backbone: str
    weights: str
    dataset: str
    split: str
    samples: str
    transform: str
    #: the view index (of per-epoch training crops: the epoch)
    view: int
    #: the run seed that per-epoch training crops are drawn with; None for views shared by every seed
    seed: int | None = None
    #: the mixed precision the features were computed under (``bf16-mixed``, ``16-mixed``); None: fp32
    precision: str | None = None

    def fields(self) -> dict:
        """The key as JSON values (``seed`` and ``precision`` only when set, so keys without them are those of
        earlier versions)."""
        fields = asdict(self)
        for optional in ("seed", "precision"):
            if fields[optional] is None:
                del fields[optional]
        return fields

    def digest(self) -> str:
        text = json.dumps({**self.fields(), "format": FORMAT_VERSION}, sort_keys=True)
        return hashlib.blake2b(text.encode(), digest_size=12).hexdigest()

    def filename(self) -> str:
        safe = lambda text: "".join(c if c.isalnum() or c in "-_" else "-" for c in text)  # noqa: E731
        view = f"v{self.view}" if self.seed is None else f"s{self.seed}-e{self.view}"
        return f"{safe(self.dataset)}.{safe(self.split)}.{view}.{self.digest()}.safetensors"


def view_seed(key: str, view: int, seed: int | None = None) -> int:
    """The seed of the random draws of view ``view`` of the image ``key`` (``Sample.seed_key``, for run
    seed ``seed``)."""
    text = f"{view}|{key}" if seed is None else f"seed {seed}|{view}|{key}"
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "little")


class ViewDataset(Dataset):
    """Samples as (transform(image), label); a random transform draws from a generator seeded by the view
    index, the image's ``seed_key`` and the run ``seed`` when given (``view_seed``), so view v of an image is the
    same in every run."""

    def __init__(self, samples: Sequence[Sample], transform: Callable, view: int, seed: int | None = None):
        self.samples, self.transform, self.view, self.seed = list(samples), transform, view, seed

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int):
        sample = self.samples[index]
        image = load_sample(sample)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(view_seed(sample.seed_key, self.view, self.seed))
            return self.transform(image), sample.label


class FeatureCache:
    """Image features of a frozen backbone, stored under ``folder`` (see the module docstring)."""

    def __init__(self, folder: str | Path, backbone, batch_size: int = 256, num_workers: int = 0,
                 precision: str = "32-true"):
        self.folder = Path(folder)
        self.backbone = backbone
        self.batch_size = batch_size
        self.num_workers = num_workers
        #: Lightning's precision of the runs: features are computed under its autocast (part of the key)
        self.precision = precision
        self._weights: str | None = None
        #: entries computed / read by this cache object (for reports and tests)
        self.computed: list[FeatureKey] = []
        self.loaded: list[FeatureKey] = []

    @property
    def weights(self) -> str:
        if self._weights is None:
            self._weights = self.backbone.state_fingerprint()  # weights and activation
        return self._weights

    def key(self, samples: Sequence[Sample], transform: Callable, dataset: str, split: str, view: int,
            seed: int | None = None) -> FeatureKey:
        return FeatureKey(self.backbone.describe(), self.weights, dataset, split, samples_digest(samples),
                          repr(transform), view, seed, self.precision if self.precision in MIXED_PRECISION else None)

    def path_for(self, key: FeatureKey) -> Path:
        return self.folder / key.filename()

    def image_features(self, samples: Sequence[Sample], transform: Callable, dataset: str, split: str,
                       view: int = 0, seed: int | None = None) -> torch.Tensor:
        """Features ``[N, D]`` (float32, CPU) of ``samples`` under ``transform`` (its view ``view``, drawn
        for run seed ``seed`` when given), read from the cache when a valid entry exists, else computed and
        stored."""
        key = self.key(samples, transform, dataset, split, view, seed)
        compute = lambda: {"features": self._compute(samples, transform, view, seed)}  # noqa: E731
        return self.stored(key, len(samples), compute)["features"]

    def stored(self, key: FeatureKey, count: int, compute: Callable[[], dict[str, torch.Tensor]]
               ) -> dict[str, torch.Tensor]:
        """The tensors of the entry ``key`` (``count`` rows each), read when a valid entry exists, else made by
        ``compute`` (a dict holding at least ``features``) and stored."""
        path = self.path_for(key)
        tensors = self._read(path, key, count)
        if tensors is not None:
            self.loaded.append(key)
        else:
            tensors = compute()
            self._write(path, key, tensors)
            self.computed.append(key)
        return tensors

    @torch.no_grad()
    def _compute(self, samples: Sequence[Sample], transform: Callable, view: int, seed: int | None) -> torch.Tensor:
        device = self.backbone.device
        # a private generator: filling the cache leaves the run's random stream as reading it would
        loader = DataLoader(ViewDataset(samples, transform, view, seed), batch_size=self.batch_size,
                            num_workers=self.num_workers, generator=torch.Generator().manual_seed(0))
        # also called from inside a training epoch (per-epoch views): the same features as before training
        with self.autocast():
            return torch.cat([self.backbone.encode_image(images.to(device)).float().cpu() for images, _ in loader])

    def autocast(self):
        """The runs' autocast (none in fp32), whatever autocast the caller is under."""
        return autocast_for(self.precision, self.backbone.device)

    def _read(self, path: Path, key: FeatureKey, count: int) -> dict[str, torch.Tensor] | None:
        """The entry's tensors, or None when it is absent, unreadable, stale or of the wrong size."""
        if not path.is_file():
            return None
        from safetensors import safe_open

        try:
            with safe_open(str(path), framework="pt") as handle:
                metadata = handle.metadata() or {}
                tensors = {name: handle.get_tensor(name) for name in handle.keys()}
        except Exception as exc:  # a truncated or overwritten file: recompute it
            warnings.warn(f"feature cache entry {path} is corrupt ({exc}); recomputing it", FeatureCacheWarning,
                          stacklevel=4)
            return None
        problem = None
        if metadata.get("key") != json.dumps(key.fields(), sort_keys=True):
            problem = "was made for other inputs"
        elif "features" not in tensors or any(t.shape[0] != count for t in tensors.values()):
            rows = sorted({t.shape[0] for t in tensors.values()})
            problem = f"holds {rows} rows for {count} samples"
        elif metadata.get("checksum") != _checksum(tensors):
            problem = "fails its checksum"
        if problem:
            warnings.warn(f"feature cache entry {path} {problem}; recomputing it", FeatureCacheWarning, stacklevel=4)
            return None
        return tensors

    def _write(self, path: Path, key: FeatureKey, tensors: dict[str, torch.Tensor]) -> None:
        from safetensors.torch import save_file

        self.folder.mkdir(parents=True, exist_ok=True)
        tmp = writer_temp_path(path)
        metadata = {"key": json.dumps(key.fields(), sort_keys=True), "checksum": _checksum(tensors),
                    "format": FORMAT_VERSION}
        try:
            save_file({name: t.contiguous() for name, t in tensors.items()}, str(tmp), metadata=metadata)
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)


def _checksum(tensors: dict[str, torch.Tensor]) -> str:
    """The entry's checksum: that of ``features`` alone (as entries with nothing else always had), else of
    every tensor in name order."""
    if set(tensors) == {"features"}:
        return tensor_checksum(tensors["features"])
    return hashlib.blake2b("".join(f"{name}:{tensor_checksum(tensors[name])}" for name in sorted(tensors)).encode(),
                           digest_size=16).hexdigest()
