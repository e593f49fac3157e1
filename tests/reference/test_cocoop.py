"""CoCoOp (KaiyangZhou/CoOp, trainers/cocoop.py) against vlpt's ``cocoop``."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .harness import CLASSNAMES, INIT_PHRASE, TEMPLATES, dassl_sgd, freeze_except, one_training_step, reference_config


def test_cocoop_matches_the_reference(references, reference_clip, backbone, images, differences):
    from vlpt.registry import METHODS

    cocoop = references.module("CoOp", "trainers/cocoop.py")
    cfg = reference_config(INPUT={"SIZE": (32, 32)},
                           TRAINER={"COCOOP": {"N_CTX": 4, "CTX_INIT": INIT_PHRASE, "PREC": "fp32"}})
    torch.manual_seed(0)
    reference = cocoop.CustomCLIP(cfg, CLASSNAMES, reference_clip("CoOp"))
    freeze_except(reference, lambda name: "prompt_learner" in name)
    cls = METHODS.get("cocoop")
    ours = cls(backbone, CLASSNAMES, TEMPLATES, cls.Config(n_ctx=4, ctx_init=INIT_PHRASE, warmup_epochs=0))
    learner, x, y = reference.prompt_learner, *images
    meta_net = [(f"meta_net.{index}.{kind}", getattr(getattr(learner.meta_net, layer), kind),
                 getattr(ours.meta_net[index], kind))
                for index, layer in ((0, "linear1"), (2, "linear2")) for kind in ("weight", "bias")]

    check = differences.comparison("CoCoOp")
    check("initial context", learner.ctx, ours.context.ctx)
    with torch.no_grad():
        for _, theirs, own in meta_net:
            own.copy_(theirs)
        reference.eval()
        features = reference.image_encoder(x)
        features = features / features.norm(dim=-1, keepdim=True)
        check("image features", features, F.normalize(ours.image_features(x), dim=-1))
        prompts = learner(features)
        check("prompts", prompts, ours.context(ours.meta_net(features)))
        text = torch.stack([reference.text_encoder(p, reference.tokenized_prompts) for p in prompts])
        check("text features", text / text.norm(dim=-1, keepdim=True), ours._conditional_text_features(features))
        check("logits", reference(x), ours.logits(x))
    reference.train()  # the reference returns its loss in training mode
    one_training_step(check, [("ctx", learner.ctx, ours.context.ctx), *meta_net],
                      lambda: reference(x, y), lambda: ours.training_loss(x, y),
                      dassl_sgd(learner.parameters(), ours.config.lr), ours.configure_optimizers()["optimizer"])
    check.assert_agreement()
