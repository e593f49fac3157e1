"""Writing the leaderboard: ``LEADERBOARD.md``, ``leaderboard.csv`` and the web page, rebuilt together from the
records. It sits above both renderers (:mod:`vlpt.results.leaderboard` for the Markdown and CSV,
:mod:`vlpt.results.site` for the page), so that neither imports the other's caller.
"""

from __future__ import annotations

import os
from pathlib import Path

from vlpt.errors import ConfigError
from vlpt.results.leaderboard import CSV_NAME, MARKDOWN_NAME, aggregate, render_csv, render_markdown
from vlpt.results.site import SITE_NAME, is_site, render_site
from vlpt.results.store import RecordStore, atomic_write_text


def _display_dir(records_dir: Path, out_dir: Path) -> str:
    """``records_dir`` relative to ``out_dir`` (independent of the working directory)."""
    try:
        return Path(os.path.relpath(records_dir.resolve(), out_dir.resolve())).as_posix()
    except ValueError:  # different drives on Windows
        return records_dir.name


def write_leaderboard(records_dir: str | Path, out_dir: str | Path, html: bool = False,
                      link_curves: bool = True) -> list[Path]:
    """Rebuild ``out_dir/LEADERBOARD.md`` and ``out_dir/leaderboard.csv`` from the records alone, and the web
    page ``out_dir/index.html`` (:mod:`vlpt.results.site`) when ``html`` is set or a page written by vlpt is
    already there, so that the three always show the same records. With ``link_curves`` the page links each
    run to its training curves (``training_curves``): not for a page published without its logs.

    Unreadable record files are skipped with a RecordWarning. Returns the written paths.
    """
    records_dir, out_dir = Path(records_dir), Path(out_dir)
    site_path = out_dir / SITE_NAME
    if html and site_path.exists() and not is_site(site_path):
        raise ConfigError(f"{site_path} exists and was not written by vlpt leaderboard; move it away or "
                          f"choose another output folder for the leaderboard site")
    write_site = html or is_site(site_path)
    records = RecordStore(records_dir).records()
    groups = aggregate(records)
    source = _display_dir(records_dir, out_dir)
    paths = [
        atomic_write_text(out_dir / MARKDOWN_NAME, render_markdown(groups, len(records), source)),
        atomic_write_text(out_dir / CSV_NAME, render_csv(groups)),
    ]
    if write_site:
        curves = training_curves(records_dir.parent / "logs", out_dir, [r.run_id for r in records]) if link_curves \
            else {}
        paths.append(atomic_write_text(site_path, render_site(groups, len(records), source, curves)))
    return paths


def training_curves(logs: Path, out_dir: Path, run_ids: list[str]) -> dict[str, str]:
    """Each run's latest training curves in ``logs`` (the records' output folder's), by run id, as links relative
    to ``out_dir``: ``RUN_ID/version_N/metrics.csv`` (CSV logger) or the folder ``RUN_ID/version_N/``
    (TensorBoard); runs without logs are left out."""
    found = {}
    for run_id in run_ids:
        versions = sorted((p for p in (logs / run_id).glob("version_*") if p.is_dir()),
                          key=lambda p: int(p.name.removeprefix("version_")) if p.name[8:].isdigit() else -1)
        for version in reversed(versions):
            target = version / "metrics.csv" if (version / "metrics.csv").is_file() else version
            if target.is_file() or any(version.iterdir()):
                found[run_id] = Path(os.path.relpath(target, out_dir)).as_posix() + ("/" if target.is_dir() else "")
                break
    return found


__all__ = ["write_leaderboard"]
