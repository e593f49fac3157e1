"""Calibration metrics of every classification evaluation: ECE over 20 bins (percent) and NLL."""
import math

import pytest
import torch

from vlpt.metrics import ClassificationScores, evaluate_classifier


def two_class_logits(confidences, predicted):
    """Scores whose softmax puts ``confidence`` on the ``predicted`` class of two."""
    rows = []
    for confidence, cls in zip(confidences, predicted):
        p = [1 - confidence, 1 - confidence]
        p[cls] = confidence
        rows.append([math.log(v) for v in p])
    return torch.tensor(rows)


def test_perfectly_calibrated_prediction_has_zero_ece():
    # confidence 0.8 on class 0 for ten images, eight of them truly class 0: accuracy equals confidence
    scores = ClassificationScores()
    scores.update(two_class_logits([0.8] * 10, [0] * 10), torch.tensor([0] * 8 + [1] * 2))
    result = scores.compute()
    assert result["accuracy"] == pytest.approx(80.0)
    assert result["ece"] == pytest.approx(0.0, abs=1e-4)
    assert result["nll"] == pytest.approx(-(8 * math.log(0.8) + 2 * math.log(0.2)) / 10, rel=1e-5)


def test_ece_equals_hand_computed_value_across_batches():
    # bin 0.90-0.95: confidence 0.92, one of two right; bin 0.60-0.65: confidence 0.62, right
    expected = 100 * (2 / 3 * abs(0.5 - 0.92) + 1 / 3 * abs(1.0 - 0.62))
    scores = ClassificationScores()
    scores.update(two_class_logits([0.92, 0.92], [0, 1]), torch.tensor([0, 0]))
    scores.update(two_class_logits([0.62], [1]), torch.tensor([1]))
    result = scores.compute()
    assert result["ece"] == pytest.approx(expected, rel=1e-4)
    assert result["nll"] == pytest.approx(-(math.log(0.92) + math.log(0.08) + math.log(0.62)) / 3, rel=1e-5)
    assert result["n"] == 3 and result["accuracy"] == pytest.approx(200 / 3)


def test_scale_of_scores_changes_calibration_not_accuracy():
    """Sharper scores (a larger logit scale) are more confident: same accuracy, different ECE and NLL."""
    logits, labels = torch.tensor([[2.0, 1.0], [1.0, 2.0], [0.5, 0.0]]), torch.tensor([0, 0, 1])
    soft, sharp = ClassificationScores(), ClassificationScores()
    soft.update(logits, labels)
    sharp.update(10 * logits, labels)
    soft, sharp = soft.compute(), sharp.compute()
    assert soft["accuracy"] == sharp["accuracy"]
    assert sharp["ece"] > soft["ece"] and sharp["nll"] > soft["nll"]


def test_evaluate_classifier_reports_calibration_of_the_methods_scores():
    class Fixed:  # a stand-in method whose scores are its input
        def logits(self, images):
            return images

    loader = [(two_class_logits([0.92, 0.92], [0, 1]), torch.tensor([0, 0])),
              (two_class_logits([0.62], [1]), torch.tensor([1]))]
    result = evaluate_classifier(Fixed(), loader, torch.device("cpu"))
    assert set(result) == {"accuracy", "n", "ece", "nll"}
    assert result["ece"] == pytest.approx(100 * (2 / 3 * 0.42 + 1 / 3 * 0.38), rel=1e-4)


def test_empty_evaluation_set_is_refused():
    with pytest.raises(ValueError, match="empty"):
        ClassificationScores().compute()
