"""CoOp: Context Optimization (Zhou et al., "Learning to Prompt for Vision-Language Models",
IJCV 2022).

M learnable context vectors replace the hand-written words of the prompt; the class name's
token embedding stays fixed. Options: context length, initialisation phrase, class-specific
context (CSC), and the class token's position (end / middle / front).

Defaults follow the reference code (KaiyangZhou/CoOp, ``trainers/coop.py``): with an
initialisation phrase the context is one shared context even when ``csc`` is set (the code
ignores CSC then; ``csc_with_init: per_class`` gives every class its own copy of the phrase, a
reading the paper's text allows), and with the class token in the middle or at the front the
class name's tokens are counted on the name alone (``vlpt.prompts.context``).
Epochs follow the reference scripts: 50 for 1 shot, 100 for 2 and 4, 200 for 8 and 16 shots, and 50 at
every shot count on ImageNet (``dataset_epochs: {imagenet: 50}`` in the ``coop`` and ``coop_m4`` configs;
CoOp's COOP.md: "for ImageNet, we use *_ep50.yaml for all settings").
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from vlpt.data.corruptions import catalog_name
from vlpt.errors import ConfigError
from vlpt.methods.base import MethodConfig, PromptMethod, cosine_logits, epochs_at
from vlpt.prompts.context import TextContext
from vlpt.registry import register_method


@dataclass
class CoOpConfig(MethodConfig):
    n_ctx: int = 16
    ctx_init: str | None = None
    csc: bool = False
    #: with ``ctx_init``: shared (the reference code ignores csc) or per_class (one copy of the phrase per class)
    csc_with_init: Literal["shared", "per_class"] = "shared"
    class_token_position: Literal["end", "middle", "front"] = "end"
    init_std: float = 0.02
    epochs: int | dict[int, int] = field(default_factory=lambda: {1: 50, 2: 100, 4: 100, 8: 200, 16: 200})
    #: dataset -> epochs (or shots -> epochs) replacing ``epochs`` on that dataset (and its corrupted copies);
    #: the ``coop`` config sets ``{imagenet: 50}`` as CoOp's scripts do
    dataset_epochs: dict[str, int | dict[int, int]] = field(default_factory=dict)

    def __post_init__(self):
        super().__post_init__()
        for name, epochs in self.dataset_epochs.items():
            values = epochs.values() if isinstance(epochs, dict) else [epochs]
            if not values or min(values) < 1:
                raise ConfigError(f"dataset_epochs[{name!r}] must be at least 1 (or a non-empty mapping "
                                  f"shots -> epochs), got {epochs}")

    def epochs_for(self, shots: int, dataset: str | None = None) -> int:
        return epochs_at(self.dataset_epochs.get(catalog_name(dataset), self.epochs), shots)


def class_specific(config: CoOpConfig) -> bool:
    """Whether the context is learned per class (``csc``, unless an init phrase makes it shared)."""
    return config.csc and not (config.ctx_init and config.csc_with_init == "shared")


@register_method("coop")
class CoOp(PromptMethod):
    """Learned text context shared by all classes (or one per class with ``csc``)."""

    Config = CoOpConfig
    frozen_image_features = True

    @classmethod
    def unseen_classes(cls, config):
        return "none" if class_specific(config) else "any"  # class-specific context exists for its classes only

    def build(self, classnames, templates):
        cfg = self.config
        self.context = TextContext(self.backbone, classnames, n_ctx=cfg.n_ctx, ctx_init=cfg.ctx_init, csc=class_specific(cfg),
                                   class_token_position=cfg.class_token_position, init_std=cfg.init_std)

    def update_classnames(self, classnames, templates):
        self.context.set_classnames(classnames)

    def text_features(self):
        """Class embeddings ``[C, D]`` from the learned prompts."""
        return self.backbone.encode_text_embeds(self.context(), self.context.eot_positions)

    def logits(self, images):
        return cosine_logits(self.image_features(images), self.text_features(), self.backbone.logit_scale)
