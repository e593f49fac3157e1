"""Episodic test-time state: what one test sample changes is undone before the next.

TPT adapts the prompt to each test image from the same starting point: after every image the
prompt parameters and the optimizer's state (AdamW's moments and step counts) are restored
exactly, so the prediction for an image does not depend on which images came before it.
"""
from __future__ import annotations

import copy
from typing import Sequence

import torch


class EpisodicState:
    """A snapshot of parameters and an optimizer's state, restored by ``restore``."""

    def __init__(self, parameters: Sequence[torch.nn.Parameter], optimizer: torch.optim.Optimizer):
        self.parameters = list(parameters)
        self.optimizer = optimizer
        self._values = [p.detach().clone() for p in self.parameters]
        self._optimizer_state = copy.deepcopy(optimizer.state_dict())

    @torch.no_grad()
    def restore(self) -> None:
        """Put the parameters and the optimizer back as they were at the snapshot."""
        for parameter, value in zip(self.parameters, self._values):
            parameter.copy_(value)
            parameter.grad = None
        self.optimizer.load_state_dict(copy.deepcopy(self._optimizer_state))
