"""KgCoOp (htyao89/KgCoOp, KgCoOp/trainers/kgcoop.py) against vlpt's ``kgcoop``."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .harness import CLASSNAMES, INIT_PHRASE, TEMPLATES, dassl_sgd, freeze_except, one_training_step, reference_config

#: the reference's penalty weight (TRAINER.COOP.W in its configs)
WEIGHT = 8.0


def test_kgcoop_matches_the_reference(references, reference_clip, backbone, images, differences, monkeypatch):
    from vlpt.registry import METHODS

    kgcoop = references.module("KgCoOp", "trainers/kgcoop.py")
    cfg = reference_config(INPUT={"SIZE": (32, 32)}, DATASET={"NAME": "ImageNet"}, TRAINER={
        "COOP": {"N_CTX": 4, "CTX_INIT": INIT_PHRASE, "CSC": False, "CLASS_TOKEN_POSITION": "end", "W": WEIGHT},
        "COCOOP": {"PREC": "fp32"}})
    clip_model = reference_clip("KgCoOp")
    torch.manual_seed(0)
    with monkeypatch.context() as patch:
        # the prompt learner loads a second CLIP and moves it to the GPU to encode the hand-written prompts
        # ("a photo of a {}." for ImageNet): here it gets the same fp32 model, on the CPU
        patch.setattr(kgcoop, "load_clip_to_cpu", lambda cfg: clip_model)
        patch.setattr(torch.nn.Module, "cuda", lambda self, *args, **kwargs: self)
        patch.setattr(torch.Tensor, "cuda", lambda self, *args, **kwargs: self)
        reference = kgcoop.CustomCLIP(cfg, CLASSNAMES, clip_model)
    freeze_except(reference, lambda name: "ctx" in name)
    cls = METHODS.get("kgcoop")
    ours = cls(backbone, CLASSNAMES, TEMPLATES, cls.Config(kg_weight=WEIGHT, warmup_epochs=0))
    learner, x, y = reference.prompt_learner, *images

    check = differences.comparison("KgCoOp")
    check("initial context", learner.ctx, ours.context.ctx)
    with torch.no_grad():  # a context away from the hand-written prompt's, as in training, so the penalty acts
        shifted = learner.ctx + 0.05 * torch.randn(learner.ctx.shape, generator=torch.Generator().manual_seed(2))
        learner.ctx.copy_(shifted)
        ours.context.ctx.copy_(shifted)
    handcrafted = reference.ori_embedding
    check("hand-written text features", handcrafted / handcrafted.norm(dim=-1, keepdim=True), ours.handcrafted)
    with torch.no_grad():
        logits, score = reference(x)
        check("logits", logits, ours.logits(x))
        check("penalty", score, ours.knowledge_distance(ours.text_features()))

    def reference_loss():
        logits, score = reference(x)
        return F.cross_entropy(logits, y) + WEIGHT * score  # KgCoOp.forward_backward with PREC fp32

    one_training_step(check, [("ctx", learner.ctx, ours.context.ctx)], reference_loss,
                      lambda: ours.training_loss(x, y),
                      dassl_sgd(learner.parameters(), ours.config.lr), ours.configure_optimizers()["optimizer"])
    check.assert_agreement()
