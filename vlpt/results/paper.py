"""Published numbers (method metadata, ``PromptMethod.published``) matched to leaderboard rows.

A row's published figure for an evaluation set is one whose protocol, backbone (the open_clip model
name: the part of the row's ``MODEL@PRETRAINED`` before ``@``), dataset, shots, evaluation set and
metric all equal the row's, and whose variant, if it names one, is the row's. A figure averaged over
datasets matches only the row averaging exactly those datasets.
"""
from __future__ import annotations

from functools import lru_cache
from typing import TYPE_CHECKING

from vlpt.methods.published import PublishedResult

if TYPE_CHECKING:
    from vlpt.results.leaderboard import Group


def model_name(backbone: str) -> str:
    """The open_clip model name of a record's backbone, ``ViT-B-16@openai`` -> ``ViT-B-16``."""
    return backbone.split("@", 1)[0]


@lru_cache(maxsize=None)
def method_published(method: str) -> tuple[PublishedResult, ...]:
    """The figures declared by the method class registered as ``method`` (none for an unknown method)."""
    from vlpt.registry import METHODS

    if method not in METHODS.names():
        return ()
    return tuple(vars(METHODS.get(method)).get("published", ()))


def paper_results(group: "Group") -> dict[tuple[str, str], PublishedResult]:
    """(eval_set, metric) -> the published figure matching the row ``group`` exactly."""
    dataset = frozenset(group.over) if group.over else group.dataset
    found = {}
    for result in method_published(group.method):
        result_dataset = frozenset(result.dataset) if result.is_average else result.dataset
        if (result.protocol == group.protocol and result.backbone == model_name(group.backbone)
                and result_dataset == dataset and result.shots == group.shots
                and result.variant in (None, group.variant)):
            found.setdefault((result.eval_set, result.metric), result)
    return found


def format_value(result: PublishedResult) -> str:
    """The figure with two decimals, as the leaderboard prints its own means."""
    return f"{result.value:.2f}"


__all__ = ["format_value", "method_published", "model_name", "paper_results"]
