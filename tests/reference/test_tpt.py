"""TPT (azshue/TPT: tpt_classification.py, clip/custom_clip.py) against vlpt's ``tpt``."""
from __future__ import annotations

import copy
from types import SimpleNamespace

import pytest
import torch

from .harness import CLASSNAMES, INIT_PHRASE, TEMPLATES, freeze_except

VIEWS, SELECTION, LR = 64, 0.1, 5e-3  # the reference's defaults: batch 64, selection_p 0.1, lr 5e-3


@pytest.mark.filterwarnings("ignore::FutureWarning", "ignore:CUDA is not available:UserWarning",
                            "ignore::SyntaxWarning")  # the reference's CUDA-only AMP and an `is not` with a literal
def test_tpt_matches_the_reference(references, reference_clip, backbone, differences, monkeypatch):
    from vlpt.registry import METHODS
    from vlpt.tta import selection
    from vlpt.tta.episodic import EpisodicState

    tpt = references.module("TPT", "tpt_classification.py")
    custom_clip = references.clip("TPT").custom_clip
    clip_model = reference_clip("TPT")
    monkeypatch.setattr(custom_clip, "load", lambda *args, **kwargs: (clip_model, None, None))  # not a download
    reference = custom_clip.ClipTestTimeTuning("cpu", CLASSNAMES, None, n_ctx=4, ctx_init=INIT_PHRASE)
    freeze_except(reference, lambda name: "prompt_learner" in name)  # as tpt_classification.main_worker
    optimizer = torch.optim.AdamW(reference.prompt_learner.parameters(), LR)
    optimizer_state = copy.deepcopy(optimizer.state_dict())
    scaler = torch.amp.GradScaler("cpu", enabled=False)  # the reference's CUDA GradScaler is disabled without CUDA
    args = SimpleNamespace(cocoop=False, tta_steps=1, selection_p=SELECTION)

    def adapt_reference(views):
        """One test image in test_time_adapt_eval: reset, tune, predict the original view."""
        with torch.no_grad():
            reference.reset()
        optimizer.load_state_dict(optimizer_state)
        tpt.test_time_tuning(reference, views, optimizer, scaler, args)
        with torch.no_grad():
            return reference(views[:1])[0]

    cls = METHODS.get("tpt")
    ours = cls(backbone, CLASSNAMES, TEMPLATES, cls.Config(views=VIEWS, steps=1, lr=LR, selection=SELECTION))
    start = ours.context.ctx.detach().clone()
    seen = {}

    def spy(name: str, function):
        def recording(*args):
            seen[name] = function(*args)
            return seen[name]
        monkeypatch.setattr(f"vlpt.methods.tpt.{name}", recording)

    spy("confident_views", selection.confident_views)
    spy("marginal_entropy", selection.marginal_entropy)
    restore = EpisodicState.restore

    def record_then_restore(self):
        seen["gradient"], seen["tuned"] = self.parameters[0].grad.clone(), self.parameters[0].detach().clone()
        restore(self)

    monkeypatch.setattr(EpisodicState, "restore", record_then_restore)
    views = torch.randn(VIEWS, 3, 32, 32, generator=torch.Generator().manual_seed(3))

    check = differences.comparison("TPT")
    check("initial context", reference.prompt_learner.ctx, start)
    ours_first = ours.adapt_and_predict(views)
    with torch.no_grad():
        logits = reference(views)
        _, chosen = tpt.select_confident_samples(logits, SELECTION)
        check("logits of the views", logits, ours.logits(views))
        check("selected views", chosen.sort().values, seen["confident_views"].sort().values, tolerance=0)
        check("marginal entropy", tpt.avg_entropy(logits[chosen]), seen["marginal_entropy"])
    reference_first = adapt_reference(views)
    # AdamW's first update, g / (|g| + eps), amplifies the rounding of near-zero gradients: compared after the step
    check("gradient of the context", reference.prompt_learner.ctx.grad, seen["gradient"])
    check("context after one step", reference.prompt_learner.ctx, seen["tuned"])
    check("tuned prediction", reference_first, ours_first)
    with torch.no_grad():
        reference.reset()
    check("context after reset", reference.prompt_learner.ctx, ours.context.ctx, tolerance=0)
    # the state is restored: a second image (the same one again) gets what the first got, on both sides
    reference_again, ours_again = adapt_reference(views), ours.adapt_and_predict(views)
    check("tuned prediction after reset", reference_again, ours_again)
    check.assert_agreement()
    assert torch.equal(ours_again, ours_first) and torch.equal(reference_again, reference_first)
    assert torch.equal(ours.context.ctx, start) and ours.context.ctx.grad is None
