"""DomainBed-layout datasets: ``<folder>/<domain>/<class>/*`` (PACS and the like).

``load_dataset("pacs@photo")`` gives one domain, each class split into 60% train / 20% val /
20% test (seeded, disjoint). Class names are the sorted class folder names over all domains, so
labels mean the same class in every domain. Registered once per catalog file with ``loader: domainbed``.
"""
from __future__ import annotations

from functools import partial
from pathlib import Path

from vlpt.data.catalog import ENTRY_LOADERS, CatalogEntry, entries, prepare_hint
from vlpt.data.fewshot import split_per_class, split_rng
from vlpt.data.samples import DatasetSplits, Sample, class_folders, list_images
from vlpt.errors import ConfigError, DatasetError
from vlpt.registry import register_dataset


def load_domain(entry: CatalogEntry, root: Path, domain: str | None = None, split_seed: int = 1) -> DatasetSplits:
    """One domain of a DomainBed-layout dataset, split per class 60/20/20."""
    if domain is None or domain not in entry.domains:
        problem = "needs a domain" if domain is None else f"has no domain {domain!r}"
        raise ConfigError(f"dataset {entry.name!r} {problem}; use {entry.name}@<domain> with one of: "
                          f"{', '.join(entry.domains)}")
    folder = (Path(root) / entry.folder).absolute()
    domain_dir = folder / domain
    if not domain_dir.is_dir():
        raise DatasetError(f"{entry.title}: domain folder {domain_dir} does not exist; {prepare_hint(entry.name, root)}")
    classnames = sorted({p.name for d in entry.domains if (folder / d).is_dir() for p in class_folders(folder / d)})
    samples = [Sample(str(p), label, name, domain)
               for label, name in enumerate(classnames) if (domain_dir / name).is_dir()
               for p in list_images(domain_dir / name)]
    if not samples:
        raise DatasetError(f"{entry.title}: no images in {domain_dir}")
    train, val, test = split_per_class(samples, [0.6, 0.2], split_rng(split_seed, f"split:{entry.name}@{domain}"))
    return DatasetSplits(f"{entry.name}@{domain}", classnames, train, val, test, list(entry.templates))


ENTRY_LOADERS["domainbed"] = load_domain
for _entry in entries("domainbed"):
    register_dataset(_entry.name)(partial(load_domain, _entry))
