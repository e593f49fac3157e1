"""ProGrad: Prompt-aligned Gradient (Zhu et al., "Prompt-aligned Gradient for Prompt Tuning", ICCV 2023).

CoOp whose update never goes against the zero-shot model's knowledge: each step takes the gradient ``g`` of the
cross-entropy and the gradient ``k`` of the distillation loss towards zero-shot CLIP's prediction (soft cross
entropy ``-sum p_zs(y) log p(y)`` at temperature T, times T^2); where they conflict (``g . k < 0``), ``g``
loses its component along ``k``: ``g - lambda (g . k / |k|^2) k`` (per parameter). With lambda = 1 the step is
orthogonal to ``k``, never against it (``tests/test_prograd.py``).

Defaults follow the reference code (BeierZhu/Prompt-align, ``trainers/prograd.py`` and its Dassl's
``prograd_backward_and_update``; ``configs/trainers/ProGrad/rn50*.yaml``, ``scripts/prograd.sh``): 16 context
vectors initialised from the hand-written prompt (``ctx_init: template``, its ``CTX_INIT: True``): the words
before the class name, after zero vectors that pad them to 16 (the code counts the phrase's words, so its tokens
beyond that count stay fixed before the name: a comma makes "pet," two tokens, and the last "a" of "a type of
pet, a photo of a" stays fixed); lambda 1, T 1; CoOp's optimisation (SGD 2e-3, batch
32, cosine, 1 warm-up epoch at 1e-5) and epochs (50 / 100 / 100 / 200 / 200 for 1 / 2 / 4 / 8 / 16 shots).
The zero-shot model and the initial phrase use ProGrad's own prompts, which put the class name last (its
``CUSTOM_TEMPLATES``: "a type of pet, a photo of a {}." where CoOp has "a photo of a {}, a type of pet.",
``handcrafted_templates`` here). The paper's 8- and 16-shot Flowers, DTD and EuroSAT figures used lambda 0.8
(its README): set ``prograd_lambda: 0.8`` for those runs.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from vlpt.errors import ConfigError
from vlpt.methods.base import cosine_logits
from vlpt.methods.coop import CoOp, CoOpConfig, class_specific
from vlpt.methods.step import Grads, TrainingStep
from vlpt.methods.zeroshot import zero_shot_weights
from vlpt.prompts.context import TextContext
from vlpt.registry import register_method

#: ``ctx_init`` value: the dataset's hand-written prompt up to the class name
TEMPLATE = "template"


@dataclass
class ProGradConfig(CoOpConfig):
    n_ctx: int = 16
    #: "template": the hand-written prompt before the class name, zero-padded to n_ctx (the reference's CTX_INIT);
    #: a phrase (CoOp's reading: n_ctx is then its token count), or None (random)
    ctx_init: str | None = TEMPLATE
    #: how much of the conflicting component is removed (1: all of it)
    prograd_lambda: float = 1.0
    #: temperature of the distillation towards zero-shot CLIP
    kl_temperature: float = 1.0
    #: ProGrad's hand-written prompts where they differ from the dataset's template (class name last)
    handcrafted_templates: dict[str, str] = field(default_factory=lambda: {
        "a photo of a {}, a type of pet.": "a type of pet, a photo of a {}.",
        "a photo of a {}, a type of flower.": "a type of flower, a photo of a {}.",
        "a photo of a {}, a type of aircraft.": "a type of aircraft, a photo of a {}.",
        "a photo of {}, a type of food.": "a type of food, a photo of {}.",
        "{} texture.": "a texture of {}.",
    })

    def __post_init__(self):
        super().__post_init__()
        if not 0 <= self.prograd_lambda <= 1:
            raise ValueError(f"prograd_lambda must be in [0, 1], got {self.prograd_lambda}")
        if not self.kl_temperature > 0:
            raise ValueError(f"kl_temperature must be positive, got {self.kl_temperature}")


def project_conflicts(grads: Grads, toward: Grads, strength: float = 1.0) -> Grads:
    """Each gradient minus ``strength`` times its component along ``toward``'s where the two point apart."""
    out = {}
    for name, g in grads.items():
        k = toward[name]
        k_norm = torch.linalg.vector_norm(k)
        unit = k / k_norm if k_norm > 0 else k
        dot = (g * unit).sum()
        out[name] = g - strength * dot * unit if dot < 0 else g
    return out


@register_method("prograd")
class ProGrad(CoOp):
    """CoOp whose gradient is stripped of its conflict with the zero-shot prediction's gradient."""

    Config = ProGradConfig

    def build(self, classnames, templates):
        cfg = self.config
        template = self.handcrafted_template(templates)
        padded = cfg.ctx_init == TEMPLATE
        ctx_init = prompt_before_name(template) if padded else cfg.ctx_init
        self.context = TextContext(self.backbone, classnames, n_ctx=cfg.n_ctx, ctx_init=ctx_init,
                                   csc=class_specific(cfg), class_token_position=cfg.class_token_position,
                                   init_std=cfg.init_std, pad_init=padded)
        self._set_zero_shot(classnames, templates)

    def update_classnames(self, classnames, templates):
        super().update_classnames(classnames, templates)
        self._set_zero_shot(classnames, templates)

    def handcrafted_template(self, templates) -> str:
        return self.config.handcrafted_templates.get(templates[0], templates[0])

    def _set_zero_shot(self, classnames, templates):
        with torch.no_grad():
            weights = zero_shot_weights(self.backbone, classnames, [self.handcrafted_template(templates)])
        self.register_buffer("zero_shot", weights, persistent=False)

    def zero_shot_loss(self, images, labels):
        """The distillation loss towards zero-shot CLIP's prediction (its gradient is the one kept to)."""
        features = self.image_features(images)
        t = self.config.kl_temperature
        with torch.no_grad():
            teacher = F.softmax(cosine_logits(features, self.zero_shot, self.backbone.logit_scale) / t, dim=-1)
        student = cosine_logits(features, self.text_features(), self.backbone.logit_scale)
        return -(teacher * F.log_softmax(student / t, dim=-1)).sum(dim=-1).mean() * t * t

    def transform_gradients(self, grads: Grads, step: TrainingStep) -> Grads:
        if self.config.prograd_lambda == 0:  # CoOp: no second pass
            return grads
        return project_conflicts(grads, step.gradients(step.loss(self.zero_shot_loss)), self.config.prograd_lambda)


def prompt_before_name(template: str) -> str:
    """The words of a hand-written prompt before its class name ("a photo of a {}." -> "a photo of a")."""
    if not template.endswith(" {}."):
        raise ConfigError(f"prograd ctx_init: template: the prompt {template!r} does not end with its class name "
                          f"(' {{}}.'); give ctx_init a phrase, or handcrafted_templates a prompt that does")
    return template[:-len(" {}.")]
