"""Numbers a method's paper published, kept as method metadata (``PromptMethod.published``).

The leaderboard shows one in its "paper" column only where a row matches it exactly: protocol,
backbone (the open_clip model name, e.g. ``ViT-B-16`` or ``RN50``), dataset (or the same set of
datasets, for a published average), shots, evaluation set and metric, and the variant when one is
named. This module holds no registration: it is imported by the method modules that cite numbers.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

#: the 11 datasets of CoOp's benchmark: the papers' averages "over 11 datasets" are over these
COOP_DATASETS = (
    "imagenet", "caltech101", "oxford_pets", "stanford_cars", "oxford_flowers", "food101",
    "fgvc_aircraft", "sun397", "dtd", "eurosat", "ucf101",
)

#: papers whose tables several methods cite
COCOOP_BASE_TO_NOVEL = ("Zhou et al., Conditional Prompt Learning for Vision-Language Models (CoCoOp), CVPR 2022: "
                        "base-to-novel, mean of 11 datasets x 3 seeds")
TPT_PAPER = ("Shu et al., Test-Time Prompt Tuning for Zero-Shot Generalization in Vision-Language Models (TPT), "
             "NeurIPS 2022")


@dataclass(frozen=True)
class PublishedResult:
    """One published figure: where it applies, its value (in %), and the paper that reports it.

    ``dataset`` is one dataset name, or a tuple of names for an average over those datasets.
    ``variant`` None matches every variant of the method; a name matches that variant only.
    ``unverified`` marks figures recalled rather than read from the paper.
    """

    protocol: str
    backbone: str
    dataset: str | tuple[str, ...]
    shots: int
    eval_set: str
    metric: str
    value: float
    reference: str
    variant: str | None = None
    unverified: bool = False

    def __post_init__(self) -> None:
        where = f"published result {self.reference!r} ({self.protocol}, {self.backbone}, {self.eval_set})"
        for name in ("protocol", "backbone", "eval_set", "metric", "reference"):
            if not isinstance(getattr(self, name), str) or not getattr(self, name):
                raise ValueError(f"{where}: {name} must be a non-empty string, got {getattr(self, name)!r}")
        if isinstance(self.dataset, list):
            object.__setattr__(self, "dataset", tuple(self.dataset))
        names = self.dataset if isinstance(self.dataset, tuple) else (self.dataset,)
        if not names or not all(isinstance(n, str) and n for n in names):
            raise ValueError(f"{where}: dataset must be a dataset name or a tuple of names, got {self.dataset!r}")
        if not isinstance(self.shots, int) or isinstance(self.shots, bool) or self.shots < 0:
            raise ValueError(f"{where}: shots must be an integer >= 0, got {self.shots!r}")
        if not isinstance(self.value, (int, float)) or not math.isfinite(self.value) or not 0 <= self.value <= 100:
            raise ValueError(f"{where}: value must be a percentage in [0, 100], got {self.value!r}")

    @property
    def is_average(self) -> bool:
        """True for a figure averaged over several datasets."""
        return isinstance(self.dataset, tuple)


def published_results(
    reference: str,
    *,
    protocol: str,
    backbone: str,
    dataset: str | tuple[str, ...],
    shots: int,
    values: dict[str, float],
    metric: str = "accuracy",
    variant: str | None = None,
    unverified: bool = False,
) -> tuple[PublishedResult, ...]:
    """One :class:`PublishedResult` per ``{eval_set: value}`` of one table row of a paper."""
    return tuple(
        PublishedResult(protocol, backbone, dataset, shots, eval_set, metric, value, reference,
                        variant=variant, unverified=unverified)
        for eval_set, value in values.items()
    )


__all__ = ["COCOOP_BASE_TO_NOVEL", "COOP_DATASETS", "TPT_PAPER", "PublishedResult", "published_results"]
