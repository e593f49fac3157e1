"""Leaderboard text compared across separate executions of the same runs: without the measured cost cells."""
from __future__ import annotations


def unmeasured(markdown: str) -> list[str]:
    """The Markdown leaderboard's lines, table rows without the measured cost cells (train and test ms per image,
    peak memory: they differ between runs), which precede the last (Selection) cell."""
    lines = []
    for line in markdown.splitlines():
        cells = line.split("|")
        lines.append("|".join(cells[:-5] + cells[-2:]) if line.startswith("|") else line)
    return lines
