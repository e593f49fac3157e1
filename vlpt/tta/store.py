"""The on-disk store of generated views, keyed by image content and generator settings.

Layout under ``root``::

    <settings.key()>/settings.json                  the generator settings (written once)
    <settings.key()>/<digest[:2]>/<digest>/000.png   view 0 of the image whose content digest is <digest>
    ...                                 /manifest.json  every view's file name and sha256, written last

An image folder is written whole under a hidden temporary name beside it and renamed into place,
so a reader sees all of an image's views or none. A folder without a manifest (an interrupted
write by other means) counts as missing; leftover temporary folders are ignored and removed by
the next save of the same image.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import re
import shutil
import tempfile
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Literal, Sequence

from PIL import Image

from vlpt.errors import DatasetError
from vlpt.results.store import atomic_write_text

if TYPE_CHECKING:
    from vlpt.tta.diffusion import DiffusionSettings

MANIFEST = "manifest.json"
SETTINGS = "settings.json"
_TMP_SUFFIX = ".tmp"
_DIGEST = re.compile(r"[0-9a-f]{64}")


#: the view store's folder under the data root, unless a suite or command names another
DEFAULT_FOLDER = "generated_views"

def image_digest(image: Image.Image) -> str:
    """sha256 hex of an image's mode, size and pixels: the content the generator sees, not its file bytes."""
    h = hashlib.sha256(f"{image.mode}:{image.width}x{image.height}:".encode("ascii"))
    h.update(image.tobytes())
    return h.hexdigest()


class CorruptViewError(DatasetError):
    """A stored view is missing, fails its checksum or does not decode."""


class ViewStore:
    """Generated views on disk: ``load``, ``save`` and ``status`` per (image digest, settings)."""

    def __init__(self, root: str | Path):
        self.root = Path(root)

    def settings_folder(self, settings: DiffusionSettings) -> Path:
        """The folder holding every image's views for ``settings``."""
        return self.root / settings.key()

    def folder(self, digest: str, settings: DiffusionSettings) -> Path:
        """The folder of one image's views."""
        if not _DIGEST.fullmatch(digest):
            raise ValueError(f"image digest must be 64 lowercase hex digits, got {digest!r}")
        return self.settings_folder(settings) / digest[:2] / digest

    def status(self, digest: str, settings: DiffusionSettings) -> Literal["missing", "ok", "corrupt"]:
        """The views' state: missing (no complete folder), corrupt (a view absent or failing its checksum) or ok."""
        folder = self.folder(digest, settings)
        if not (folder / MANIFEST).is_file():
            return "missing"
        try:
            self._verified_files(folder, settings)
        except CorruptViewError:
            return "corrupt"
        return "ok"

    def load(self, digest: str, settings: DiffusionSettings) -> list[Image.Image] | None:
        """The stored views, decoded as RGB; None when absent, CorruptViewError naming the file when corrupt."""
        folder = self.folder(digest, settings)
        if not (folder / MANIFEST).is_file():
            return None
        views = []
        for path, data in self._verified_files(folder, settings):
            try:
                with Image.open(io.BytesIO(data)) as image:
                    views.append(image.convert("RGB"))
            except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
                raise CorruptViewError(f"generated view {path} cannot be decoded: {exc}") from exc
        return views

    def save(self, digest: str, settings: DiffusionSettings, images: Sequence[Image.Image]) -> Path:
        """Store ``images`` as the views of ``digest`` (replacing any stored ones); returns the image folder."""
        if len(images) != settings.views:
            raise ValueError(f"expected {settings.views} views for settings {settings.key()}, got {len(images)}")
        folder = self.folder(digest, settings)
        settings_file = self.settings_folder(settings) / SETTINGS
        if not settings_file.is_file():
            atomic_write_text(settings_file, json.dumps(settings.canonical(), indent=2, sort_keys=True) + "\n")
        folder.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{digest}.", suffix=_TMP_SUFFIX, dir=folder.parent))
        try:
            entries = []
            for i, image in enumerate(images):
                buffer = io.BytesIO()
                image.convert("RGB").save(buffer, format="PNG")
                data = buffer.getvalue()
                (tmp / f"{i:03d}.png").write_bytes(data)
                entries.append({"file": f"{i:03d}.png", "sha256": hashlib.sha256(data).hexdigest()})
            manifest = {"digest": digest, "settings": settings.key(), "views": entries}
            (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n", encoding="utf-8")
            if folder.exists():  # incomplete or corrupt: moved aside, then replaced
                old = folder.with_name(f".{digest}.{uuid.uuid4().hex}.old{_TMP_SUFFIX}")
                os.rename(folder, old)
                shutil.rmtree(old)
            os.rename(tmp, folder)
        except OSError:
            shutil.rmtree(tmp, ignore_errors=True)
            if self.status(digest, settings) == "ok":  # another process saved this image meanwhile
                return folder
            raise
        for leftover in folder.parent.glob(f".{digest}.*{_TMP_SUFFIX}"):
            shutil.rmtree(leftover, ignore_errors=True)
        return folder

    def _verified_files(self, folder: Path, settings: DiffusionSettings) -> list[tuple[Path, bytes]]:
        """Every view file named in the manifest with its bytes, checked against the manifest."""
        manifest_path = folder / MANIFEST
        try:
            manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
            entries = [(str(e["file"]), str(e["sha256"])) for e in manifest["views"]]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise CorruptViewError(f"manifest {manifest_path} is unreadable: {exc}") from exc
        if len(entries) != settings.views:
            raise CorruptViewError(f"manifest {manifest_path} lists {len(entries)} views, expected {settings.views}")
        files = []
        for name, checksum in entries:
            path = folder / name
            if Path(name).name != name:
                raise CorruptViewError(f"manifest {manifest_path} names {name!r}, expected a file name in {folder}")
            try:
                data = path.read_bytes()
            except OSError as exc:
                raise CorruptViewError(f"generated view {path} listed in {manifest_path} cannot be read: {exc}") from exc
            if hashlib.sha256(data).hexdigest() != checksum:
                raise CorruptViewError(f"generated view {path} does not match its sha256 in {manifest_path}")
            files.append((path, data))
        return files


__all__ = ["CorruptViewError", "ViewStore", "image_digest"]
