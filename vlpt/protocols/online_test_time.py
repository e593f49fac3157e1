"""``online_test_time``: test-time adaptation over a stream. As ``test_time`` (nothing trained with gradients; the
source's test split and every target's), but a method's state carries from one test image to the next (TDA's
and DMN's caches of test features). Each evaluation set is one stream, starting from the method's initial state,
in an order drawn from the run's seed, so seeds measure how much the result depends on the order (a dataset and
its corrupted copies stream in the same order). Only test-time methods meet the stream (zero-shot scores every
image alone, from the same stored features as under ``test_time``). A test-time method that reads labelled
images without training (DMN-TF) takes ``shots``. Episodic methods (TPT) are refused here, online ones under
every other protocol. Facts: ``configs/protocols/online_test_time.yaml``.
"""
from __future__ import annotations

from vlpt.data.corruptions import split_corrupted_name
from vlpt.data.fewshot import split_rng
from vlpt.protocols.base import register_protocol
from vlpt.protocols.classification import few_shot_split, test_set
from vlpt.protocols.test_time import TestTimeAdaptation


def stream_order(samples: list, seed: int, dataset: str) -> list:
    """``samples`` in the order of the stream of run seed ``seed`` (the same for ``dataset``'s corrupted copies)."""
    order = split_rng(seed, f"stream:{split_corrupted_name(dataset)[0]}").permutation(len(samples))
    return [samples[i] for i in order]


@register_protocol
class OnlineTestTimeAdaptation(TestTimeAdaptation):
    __test__ = False  # not a pytest class
    name = "online_test_time"  # its facts say stream: online

    def split(self, source, shots, seed, targets):
        """As ``test_time``; a test-time method that reads labelled images without training (DMN-TF) gets K of
        them per class, sampled as few-shot protocols sample them (the run's seed)."""
        if not shots:
            return super().split(source, shots, seed, targets)
        train, val = few_shot_split(source, shots, seed)
        return train, val, source, [test_set("test", source)]

    def test_stream(self, samples, seed, dataset):
        return stream_order(samples, seed, dataset)
