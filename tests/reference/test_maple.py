"""MaPLe (muzairkhattak/multimodal-prompt-learning, trainers/maple.py) against vlpt's ``maple``.

The reference casts its vision and deeper text prompts to fp16 (``.half()``) even in fp32 runs; the
comparison runs it in fp32 with those casts neutralised, and checks the logits with the casts kept
at fp16's precision.
"""
from __future__ import annotations

import torch

from .harness import CLASSNAMES, INIT_PHRASE, TEMPLATES, dassl_sgd, freeze_except, one_training_step, reference_config

N_CTX, DEPTH = 2, 2  # the tiny backbone has 3 layers: prompts enter layers 0 and 1, layer 2 keeps them
#: fp16 rounding of the prompt tokens (relative 2**-11) moves the logits by about 1e-3
FP16_TOLERANCE = 1e-2


def test_maple_matches_the_reference(references, reference_clip, backbone, images, differences, monkeypatch):
    from vlpt.registry import METHODS

    maple = references.module("MaPLe", "trainers/maple.py")
    cfg = reference_config(INPUT={"SIZE": (32, 32)}, TRAINER={"MAPLE": {
        "N_CTX": N_CTX, "CTX_INIT": INIT_PHRASE, "PREC": "fp32", "PROMPT_DEPTH": DEPTH}})
    design = {"trainer": "MaPLe", "vision_depth": 0, "language_depth": 0, "vision_ctx": 0, "language_ctx": 0,
              "maple_length": N_CTX}  # MaPLe's load_clip_to_cpu
    torch.manual_seed(0)
    reference = maple.CustomCLIP(cfg, CLASSNAMES, reference_clip("MaPLe", design))
    freeze_except(reference, lambda name: "prompt_learner" in name or "VPT" in name)
    learner = reference.prompt_learner.float()  # its first coupling was made fp16
    cls = METHODS.get("maple")
    ours = cls(backbone, CLASSNAMES, TEMPLATES, cls.Config(n_ctx=N_CTX, prompt_depth=DEPTH, warmup_epochs=0))
    x, y = images
    theirs = [learner.proj, *learner.compound_prompt_projections]
    parameters = [
        ("ctx", learner.ctx, ours.context.ctx),
        *[(f"text_prompts.{i}", learner.compound_prompts_text[i], ours.text_prompts.tokens[i])
          for i in range(DEPTH - 1)],
        *[(f"couplings.{i}.{kind}", getattr(theirs[i], kind), getattr(ours.couplings[i], kind))
          for i in range(DEPTH) for kind in ("weight", "bias")],
    ]

    check = differences.comparison("MaPLe")
    check("initial context", learner.ctx, ours.context.ctx)
    with torch.no_grad():
        for _, reference_parameter, our_parameter in parameters[1:]:
            our_parameter.copy_(reference_parameter)
        reference.eval()
        check("logits, reference's fp16 casts kept", reference(x), ours.logits(x), tolerance=FP16_TOLERANCE)
        monkeypatch.setattr(torch.Tensor, "half", lambda self, *args, **kwargs: self)
        prompts, shared_ctx, deep_text, deep_vision = learner()
        check("prompts", prompts, ours.context())
        vision_prompts = ours.vision_prompts()
        for layer, tokens in enumerate([shared_ctx, *deep_vision]):
            check(f"vision prompts, layer {layer}", tokens, vision_prompts[layer])
        check("text features", reference.text_encoder(prompts, reference.tokenized_prompts, deep_text),
              ours.text_features())
        check("image features", reference.image_encoder(x, shared_ctx, deep_vision),
              backbone.encode_image(x, deep_prompts=vision_prompts))
        check("logits", reference(x), ours.logits(x))
    reference.train()  # the reference returns its loss in training mode
    one_training_step(check, parameters, lambda: reference(x, y), lambda: ours.training_loss(x, y),
                      dassl_sgd(reference.parameters(), ours.config.lr), ours.configure_optimizers()["optimizer"])
    check.assert_agreement()
