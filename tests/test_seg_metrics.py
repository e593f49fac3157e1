"""Segmentation Dice / IoU against hand-computed values, and the Dice + 0.2·CE loss."""
import math

import pytest
import torch

from vlpt.seg.loss import EPS, segmentation_loss
from vlpt.seg.metrics import SegmentationScores

IGNORE = 255


def maps(*rows_per_image):
    """int64 label maps [B, H, W] from nested lists."""
    return torch.tensor(rows_per_image, dtype=torch.int64)


def scores(prediction, target, num_classes=2, binary=True):
    metric = SegmentationScores(num_classes, binary=binary, ignore_index=IGNORE)
    metric.update(prediction, target)
    return metric.compute()


# binary 4x4: TP = 3, FP = 1, FN = 2
TARGET = [[1, 1, 1, 1], [1, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]]
PREDICTION = [[1, 1, 1, 0], [0, 0, 0, 1], [0, 0, 0, 0], [0, 0, 0, 0]]


@pytest.mark.parametrize("num_classes", [1, 2])
def test_binary_dice_and_iou_by_hand(num_classes):
    result = scores(maps(PREDICTION), maps(TARGET), num_classes=num_classes)
    tp, fp, fn = 3, 1, 2
    assert result["dice"] == pytest.approx(100 * 2 * tp / (2 * tp + fp + fn))
    assert result["iou"] == pytest.approx(100 * tp / (tp + fp + fn))
    assert result["n"] == 1
    assert isinstance(result["dice"], float) and isinstance(result["iou"], float)


# 3 classes, two 2x4 images; class 2 is absent from both maps of the second image
MC_TARGET = maps([[0, 0, 1, 1], [0, 0, 2, 2]], [[0, 0, 1, 1], [0, 0, 1, 1]])
MC_PREDICTION = maps([[0, 1, 1, 1], [0, 0, 2, 0]], [[0, 0, 1, 1], [0, 0, 1, 1]])


def test_multiclass_dice_and_iou_by_hand():
    result = scores(MC_PREDICTION, MC_TARGET, num_classes=3, binary=False)
    # image 1: class 0 TP 3 FP 1 FN 1; class 1 TP 2 FP 1 FN 0; class 2 TP 1 FP 0 FN 1
    image1 = (6 / 8 + 4 / 5 + 2 / 3) / 3
    image2 = (1 + 1) / 2  # perfect; class 2 is absent from the image, so it is not averaged in
    assert result["dice"] == pytest.approx(100 * (image1 + image2) / 2)
    # global counts: class 0 TP 3+4 FP 1 FN 1; class 1 TP 2+4 FP 1 FN 0; class 2 TP 1 FP 0 FN 1
    assert result["iou"] == pytest.approx(100 * (7 / 9 + 6 / 7 + 1 / 2) / 3)
    assert result["n"] == 2


def test_classes_absent_from_the_whole_set_are_not_averaged():
    three = scores(MC_PREDICTION, MC_TARGET, num_classes=3, binary=False)
    assert scores(MC_PREDICTION, MC_TARGET, num_classes=5, binary=False) == pytest.approx(three)


def test_batches_accumulate_like_one_batch():
    metric = SegmentationScores(3, binary=False)
    metric.update(MC_PREDICTION[:1], MC_TARGET[:1])
    metric.update(MC_PREDICTION[1:], MC_TARGET[1:])
    assert metric.compute() == pytest.approx(scores(MC_PREDICTION, MC_TARGET, num_classes=3, binary=False))


def test_dice_averages_images_while_iou_pools_pixels():
    big = torch.zeros(4, 4, dtype=torch.int64)
    big[:2] = 1  # 8 foreground pixels, predicted exactly
    small_target = torch.zeros(4, 4, dtype=torch.int64)
    small_target[3, 3] = 1
    small_prediction = torch.zeros(4, 4, dtype=torch.int64)
    small_prediction[0, 0] = 1  # the one foreground pixel missed, one false positive
    result = scores(torch.stack([big, small_prediction]), torch.stack([big, small_target]))
    assert result["dice"] == pytest.approx(100 * (1 + 0) / 2)
    assert result["iou"] == pytest.approx(100 * 8 / (8 + 1 + 1))
    pooled_dice = 2 * 8 / (2 * 8 + 1 + 1)
    assert result["dice"] != pytest.approx(100 * pooled_dice)


def test_empty_target_and_prediction_score_100():
    empty = torch.zeros(1, 4, 4, dtype=torch.int64)
    assert scores(empty, empty) == {"dice": 100.0, "iou": 100.0, "n": 1}
    both = scores(torch.cat([maps(PREDICTION), empty]), torch.cat([maps(TARGET), empty]))
    assert both["dice"] == pytest.approx(100 * (6 / 9 + 1) / 2)
    assert both["iou"] == pytest.approx(100 * 3 / 6)  # the empty image adds no pixel counts


def test_a_missed_or_spurious_foreground_scores_0():
    empty = torch.zeros(1, 4, 4, dtype=torch.int64)
    assert scores(maps(PREDICTION), empty)["dice"] == 0.0
    assert scores(empty, maps(TARGET))["dice"] == 0.0


def test_ignored_pixels_count_nowhere():
    target = maps(TARGET)
    target[0, 3] = IGNORE  # the ignore band covers the last row
    prediction = maps(PREDICTION)
    base = scores(prediction, target)
    assert base["dice"] == pytest.approx(100 * 6 / 9)
    prediction[0, 3] = 1  # now wrong everywhere in the ignored row
    assert scores(prediction, target) == base

    # a prediction wrong only at ignored pixels is perfect
    target = MC_TARGET.clone()
    target[:, :, 0] = IGNORE
    prediction = target.clone()
    prediction[:, :, 0] = 2
    assert scores(prediction, target, num_classes=3, binary=False) == {"dice": 100.0, "iou": 100.0, "n": 2}


def test_an_image_of_only_ignored_pixels_is_skipped():
    ignored = torch.full((1, 4, 4), IGNORE, dtype=torch.int64)
    metric = SegmentationScores(3, binary=False)
    metric.update(torch.zeros_like(ignored), ignored)
    with pytest.raises(ValueError, match="empty evaluation set"):
        metric.compute()
    metric.update(MC_PREDICTION, MC_TARGET)
    assert metric.compute() == pytest.approx(scores(MC_PREDICTION, MC_TARGET, num_classes=3, binary=False))


def test_bad_arguments_raise_clear_errors():
    with pytest.raises(ValueError, match="binary task has 1 or 2 classes"):
        SegmentationScores(3, binary=True)
    with pytest.raises(ValueError, match="num_classes >= 2"):
        SegmentationScores(1, binary=False)
    with pytest.raises(ValueError, match="ignore_index 1 is one of the classes"):
        SegmentationScores(3, binary=False, ignore_index=1)
    with pytest.raises(ValueError, match=r"\[B, H, W\]"):
        SegmentationScores(2, binary=True).update(maps(PREDICTION)[0], maps(TARGET)[0])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_scores_on_the_gpu_match_the_cpu():
    gpu = scores(MC_PREDICTION.cuda(), MC_TARGET.cuda(), num_classes=3, binary=False)
    assert gpu == pytest.approx(scores(MC_PREDICTION, MC_TARGET, num_classes=3, binary=False))


# ---------------------------------------------------------------- loss


def test_binary_loss_by_hand():
    logits = torch.tensor([0.0, math.log(3)]).view(1, 1, 1, 2)  # sigmoid: 1/2, 3/4
    target = torch.tensor([1, 0]).view(1, 1, 2)
    dice = 1 - (2 * (1 / 2) + EPS) / ((1 / 2 + 3 / 4) + 1 + EPS)
    bce = (-math.log(1 / 2) - math.log(1 - 3 / 4)) / 2
    loss = segmentation_loss(logits, target, binary=True)
    assert loss.item() == pytest.approx(dice + 0.2 * bce)
    assert segmentation_loss(logits, target, binary=True, dice_weight=0.5, ce_weight=1.0).item() == pytest.approx(
        0.5 * dice + bce
    )


def test_multiclass_loss_by_hand():
    # pixel 1: logits (0, 0) -> softmax (1/2, 1/2), class 0; pixel 2: (0, ln 3) -> (1/4, 3/4), class 1
    logits = torch.tensor([[0.0, 0.0], [0.0, math.log(3)]]).T.reshape(1, 2, 1, 2)
    target = torch.tensor([0, 1]).view(1, 1, 2)
    dice0 = 1 - (2 * (1 / 2) + EPS) / ((1 / 2 + 1 / 4) + 1 + EPS)
    dice1 = 1 - (2 * (3 / 4) + EPS) / ((1 / 2 + 3 / 4) + 1 + EPS)
    ce = (-math.log(1 / 2) - math.log(3 / 4)) / 2
    loss = segmentation_loss(logits, target, binary=False)
    assert loss.item() == pytest.approx((dice0 + dice1) / 2 + 0.2 * ce)


def test_dice_is_averaged_per_image():
    logits = torch.tensor([0.0, math.log(3)]).view(1, 1, 1, 2)
    target = torch.tensor([1, 0]).view(1, 1, 2)
    perfect = torch.tensor([20.0, -20.0]).view(1, 1, 1, 2)
    pair = segmentation_loss(torch.cat([logits, perfect]), torch.cat([target, target]), binary=True, ce_weight=0.0)
    separate = [segmentation_loss(x, target, binary=True, ce_weight=0.0) for x in (logits, perfect)]
    assert pair.item() == pytest.approx(sum(s.item() for s in separate) / 2)


@pytest.mark.parametrize("binary", [True, False])
def test_perfect_logits_give_a_lower_loss_than_wrong_ones(binary):
    torch.manual_seed(0)
    classes = 2 if binary else 4
    target = torch.randint(0, classes, (2, 8, 8))
    one_hot = torch.nn.functional.one_hot(target, classes).permute(0, 3, 1, 2).float()
    good = (10 * (2 * one_hot - 1))[:, 1:] if binary else 10 * one_hot
    bad = -good
    assert segmentation_loss(good, target, binary) < 0.01
    assert segmentation_loss(good, target, binary) < segmentation_loss(bad, target, binary)


@pytest.mark.parametrize("binary", [True, False])
def test_ignored_pixels_contribute_neither_loss_nor_gradient(binary):
    torch.manual_seed(0)
    classes = 1 if binary else 3
    target = torch.randint(0, 2 if binary else 3, (2, 6, 6))
    ignored = torch.rand(2, 6, 6) < 0.3
    target[ignored] = IGNORE
    logits = torch.randn(2, classes, 6, 6, requires_grad=True)
    changed = logits.detach().clone()
    changed[ignored.unsqueeze(1).expand_as(changed)] = 100.0 * torch.randn(int(ignored.sum()) * classes)
    changed.requires_grad_(True)

    loss, loss_changed = segmentation_loss(logits, target, binary), segmentation_loss(changed, target, binary)
    loss.backward()
    loss_changed.backward()
    assert loss.item() == pytest.approx(loss_changed.item(), rel=1e-6)
    mask = ignored.unsqueeze(1).expand_as(logits)
    assert torch.equal(logits.grad[mask], torch.zeros_like(logits.grad[mask]))
    assert logits.grad[~mask].abs().sum() > 0
    assert torch.allclose(logits.grad[~mask], changed.grad[~mask])


def test_loss_with_every_pixel_ignored_is_zero():
    logits = torch.randn(1, 3, 2, 2, requires_grad=True)
    loss = segmentation_loss(logits, torch.full((1, 2, 2), IGNORE), binary=False)
    loss.backward()
    assert loss.item() == 0.0 and torch.count_nonzero(logits.grad) == 0


def test_loss_rejects_bad_shapes():
    with pytest.raises(ValueError, match="one logit channel"):
        segmentation_loss(torch.zeros(1, 2, 2, 2), torch.zeros(1, 2, 2, dtype=torch.int64), binary=True)
    with pytest.raises(ValueError, match=r"target \[B, H, W\]"):
        segmentation_loss(torch.zeros(1, 1, 2, 2), torch.zeros(1, 3, 3, dtype=torch.int64), binary=True)
    with pytest.raises(ValueError, match="int64"):
        segmentation_loss(torch.zeros(1, 1, 2, 2), torch.zeros(1, 2, 2), binary=True)
