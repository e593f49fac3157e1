"""DePT: the head's scores are fused with the prompt's on the classes it was trained on and left out elsewhere,
the loss is the reference's weighted pair (plus KgCoOp's penalty), and the head learns at 6.5 times the rate."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from vlpt.errors import ConfigError
from vlpt.methods.base import cosine_logits
from vlpt.methods.dept import DePTCoOp, DePTKgCoOp, DePTMaPLe

CLASSES = ["red circle", "green square", "blue star"]
TEMPLATES = ["a photo of a {}."]


def features(backbone, n=4, seed=0):
    return torch.randn(n, backbone.embed_dim, generator=torch.Generator().manual_seed(seed))


def trained(backbone, cls=DePTKgCoOp):
    method = cls(backbone, CLASSES, TEMPLATES)
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():  # as after training: transforms away from the identity
        method.film_image.scale.add_(0.1 * torch.randn(backbone.embed_dim, generator=generator))
        method.film_text.shift.add_(0.1 * torch.randn(backbone.embed_dim, generator=generator))
    return method


def test_scores_fuse_the_head_on_trained_classes_and_leave_it_out_elsewhere(tiny_backbone):
    method, x = trained(tiny_backbone), features(tiny_backbone)
    with torch.no_grad():
        prompt = cosine_logits(x, method.text_features(), tiny_backbone.logit_scale)
        head = (x * method.film_image.scale + method.film_image.shift) @ method.head.weight.T + method.head.bias
        torch.testing.assert_close(method.logits(x), 0.3 * prompt + 0.7 * head)
        method.set_classnames(["blue star", "red circle"])  # a subset: the head's rows follow
        torch.testing.assert_close(method.logits(x), (0.3 * prompt + 0.7 * head)[:, [2, 0]], rtol=1e-5, atol=1e-5)
        method.set_classnames(["blue star", "purple moon"])  # an unseen class: the prompt alone
        assert torch.allclose(method.logits(x), cosine_logits(x, method.text_features(), tiny_backbone.logit_scale))


@pytest.mark.parametrize("cls, penalty", [(DePTCoOp, False), (DePTKgCoOp, True)])
def test_the_loss_is_the_references(tiny_backbone, cls, penalty):
    method, x, y = trained(tiny_backbone, cls), features(tiny_backbone), torch.tensor([0, 1, 2, 1])
    with torch.no_grad():
        text = method.text_features()
        prompt = cosine_logits(x, text, tiny_backbone.logit_scale)
        head = method.head(torch.cat([method.film_text(text)[y], method.film_image(x)]))
        expected = 0.3 * F.cross_entropy(prompt, y) + 0.7 * F.cross_entropy(head, torch.cat([y, y]))
        if penalty:
            expected = expected + 2.0 * (1 - F.cosine_similarity(F.normalize(text, dim=-1), method.handcrafted).mean())
        torch.testing.assert_close(method.training_loss(x, y), expected)


def test_the_head_learns_at_six_and_a_half_times_the_rate_after_the_same_warm_up(tiny_backbone):
    """Dassl's constant warm-up puts every parameter group at 1e-5; then the head runs at 6.5 times the prompt's lr."""
    method = DePTKgCoOp(tiny_backbone, CLASSES, TEMPLATES)
    method.max_epochs = 10
    setup = method.configure_optimizers()
    optimizer, scheduler = setup["optimizer"], setup["lr_scheduler"]["scheduler"]
    prompt_group, head_group = optimizer.param_groups
    assert {id(p) for p in head_group["params"]} == {id(p) for m in (method.film_image, method.film_text, method.head)
                                                     for p in m.parameters()}
    assert [id(p) for p in prompt_group["params"]] == [id(method.context.ctx)]
    assert (prompt_group["lr"], head_group["lr"]) == pytest.approx((1e-5, 1e-5))  # warm-up epoch
    optimizer.step()
    scheduler.step()
    assert (prompt_group["lr"], head_group["lr"]) == pytest.approx((0.0035, 0.0035 * 6.5))


def test_a_checkpoint_keeps_the_head_and_its_classes(tiny_backbone, tmp_path):
    method, x = trained(tiny_backbone), features(tiny_backbone)
    method.save_checkpoint(tmp_path / "d.pt")
    other = DePTKgCoOp(tiny_backbone, ["blue star", "red circle", "green square"], TEMPLATES)
    other.load_checkpoint(tmp_path / "d.pt")
    with torch.no_grad():
        torch.testing.assert_close(other.logits(x), method.logits(x))


def test_bad_settings_are_named():
    with pytest.raises(ConfigError, match="head_weight must be in"):
        DePTKgCoOp.Config(head_weight=1.5)
    with pytest.raises(ConfigError, match="dept trains with SGD"):
        DePTCoOp.Config(optimizer="adamw")


def test_dept_maple_fuses_its_head_over_maples_prompted_image_features(tiny_backbone):
    """On MaPLe the head reads the image features the coupled vision prompts produce (not the frozen ones); the
    reference's MaPLe config (2 tokens, depth 9, 10 epochs) is the default."""
    config = DePTMaPLe.Config()
    assert (config.n_ctx, config.prompt_depth, config.epochs, config.lr, config.batch_size) == (2, 9, 10, 0.0035, 4)
    method = DePTMaPLe(tiny_backbone, CLASSES, TEMPLATES, DePTMaPLe.Config(prompt_depth=2))
    images = torch.randn(2, 3, tiny_backbone.image_size, tiny_backbone.image_size,
                         generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        prompted = tiny_backbone.encode_image(images, deep_prompts=method.vision_prompts())
        assert not torch.allclose(prompted, tiny_backbone.encode_image(images))
        prompt = cosine_logits(prompted, method.text_features(), tiny_backbone.logit_scale)
        head = method.head(method.film_image(prompted))
        torch.testing.assert_close(method.logits(images), 0.3 * prompt + 0.7 * head)
    labels = torch.tensor([0, 2])
    method.training_loss(images, labels).backward()
    assert method.head.weight.grad.abs().sum() > 0 and method.context.ctx.grad.abs().sum() > 0
    # the couplings reach the loss only through the prompted image features: training reads those too
    assert method.couplings[0].weight.grad.abs().sum() > 0
