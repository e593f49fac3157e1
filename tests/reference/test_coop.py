"""CoOp (KaiyangZhou/CoOp, trainers/coop.py) against vlpt's ``coop``."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from .harness import CLASSNAMES, INIT_PHRASE, TEMPLATES, dassl_sgd, freeze_except, one_training_step, reference_config

CASES = {
    "end": {},
    "middle": {"class_token_position": "middle"},
    "front": {"class_token_position": "front"},
    "class-specific": {"csc": True},
    "init phrase": {"ctx_init": INIT_PHRASE},
    "class-specific, init phrase": {"csc": True, "ctx_init": INIT_PHRASE},
}


@pytest.mark.parametrize("case", CASES)
def test_coop_matches_the_reference(case, references, reference_clip, backbone, images, differences):
    from vlpt.registry import METHODS

    options = {"n_ctx": 16, "ctx_init": None, "csc": False, "class_token_position": "end", **CASES[case]}
    coop = references.module("CoOp", "trainers/coop.py")
    cfg = reference_config(INPUT={"SIZE": (32, 32)}, TRAINER={"COOP": {
        "N_CTX": options["n_ctx"], "CTX_INIT": options["ctx_init"] or "", "CSC": options["csc"],
        "CLASS_TOKEN_POSITION": options["class_token_position"]}})
    torch.manual_seed(0)
    reference = coop.CustomCLIP(cfg, CLASSNAMES, reference_clip("CoOp"))
    freeze_except(reference, lambda name: "prompt_learner" in name)
    cls = METHODS.get("coop")
    ours = cls(backbone, CLASSNAMES, TEMPLATES, cls.Config(**options, warmup_epochs=0))
    learner, x, y = reference.prompt_learner, *images

    check = differences.comparison("CoOp", case)
    if options["ctx_init"]:
        check("initial context", learner.ctx, ours.context.ctx)
    else:
        with torch.no_grad():
            ours.context.ctx.copy_(learner.ctx)
    check("token ids", reference.tokenized_prompts, ours.context.tokens, tolerance=0)
    with torch.no_grad():
        prompts = learner()
        check("prompts", prompts, ours.context())
        check("text features", reference.text_encoder(prompts, reference.tokenized_prompts), ours.text_features())
        check("image features", reference.image_encoder(x), ours.image_features(x))
        check("logits", reference(x), ours.logits(x))
    one_training_step(check, [("ctx", learner.ctx, ours.context.ctx)],
                      lambda: F.cross_entropy(reference(x), y), lambda: ours.training_loss(x, y),
                      dassl_sgd(learner.parameters(), ours.config.lr), ours.configure_optimizers()["optimizer"])
    check.assert_agreement()
