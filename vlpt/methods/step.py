"""One training step for every driver: the loss on a batch, its gradients, then the gradient transforms.

Single-task training (``PromptMethod.training_step`` and ``on_before_optimizer_step``), the multitask
module (``vlpt.multitask``) and GRAM's inner step (``vlpt.meta.gram``) each describe their batch as a
:class:`TrainingStep` and take the loss and the transformed gradients from it, so a method that edits
its gradients (``PromptMethod.transform_gradients``, e.g. a ProGrad-style projection) trains the same
under all three. Between ``loss()`` and ``apply_transforms()`` Lightning takes the backward pass (scaled
and unscaled under mixed precision, averaged over DDP processes); GRAM differentiates with
``gradients`` and keeps the graph for its second-order outer step.
"""
from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Callable, ContextManager, Mapping

import torch

if TYPE_CHECKING:
    from vlpt.methods.base import PromptMethod

Grads = dict[str, torch.Tensor]
#: a loss of a batch: ``fn(inputs, labels)`` -> scalar
BatchLoss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
#: ``transform(grads, step)`` -> grads of the same names and shapes
GradientTransform = Callable[[Grads, "TrainingStep"], Grads]


def gradients(loss: torch.Tensor, params: Mapping[str, torch.Tensor], create_graph: bool = False) -> Grads:
    """``d loss / d params`` by name; a parameter the loss does not reach gets a zero gradient."""
    names = list(params)
    grads = torch.autograd.grad(loss, [params[n] for n in names], create_graph=create_graph, allow_unused=True)
    return {n: (g if g is not None else torch.zeros_like(params[n])) for n, g in zip(names, grads)}


def training_precision(module) -> Callable[[], ContextManager]:
    """The Trainer's training-step precision context of ``module`` (bf16 autocast under ``bf16-mixed``; none outside
    a Trainer). A gradient transform evaluates its losses after the backward pass, outside the training step's
    autocast: the Lightning drivers give it to their ``TrainingStep``, so those losses see the precision the
    training loss saw. Under
    ``16-mixed`` they stay in fp32: their gradients are taken without the loss scaler (the training loss's were
    unscaled before the transforms run), and unscaled fp16 gradients can underflow."""
    trainer = module._trainer
    if trainer is None or getattr(trainer.precision_plugin, "precision", None) == "16-mixed":
        return contextlib.nullcontext
    return trainer.precision_plugin.train_step_context


def process_mean(module) -> Callable[[torch.Tensor], torch.Tensor]:
    """Averages a tensor over the processes of the Trainer running ``module`` (a LightningModule)."""
    return lambda tensor: module.trainer.strategy.reduce(tensor, reduce_op="mean")


class TrainingStep:
    """One batch of training, as the loss and a method's gradient transforms see it.

    ``evaluate(fn)`` computes a batch loss ``fn(inputs, labels)`` the way the driver computes the training
    loss (the same classes and parameter values; the multitask module's weighting of tasks). ``params``
    are the tensors the gradients are of, by checkpoint name: the method's ``prompt_parameters()``, or
    GRAM's adapted values of them. ``reduce`` averages a gradient over processes (Lightning's strategy).
    ``precision`` is the context every loss is evaluated in (``training_precision``; none by default).
    """

    def __init__(self, method: PromptMethod, evaluate: Callable[[BatchLoss], torch.Tensor],
                 params: Mapping[str, torch.Tensor] | None = None, create_graph: bool = False,
                 reduce: Callable[[torch.Tensor], torch.Tensor] | None = None,
                 precision: Callable[[], ContextManager] = contextlib.nullcontext):
        self.method = method
        self.evaluate = evaluate
        self.params = dict(params) if params is not None else method.prompt_parameters()
        self.create_graph = create_graph
        self.reduce = reduce
        self.precision = precision

    def loss(self, fn: BatchLoss | None = None) -> torch.Tensor:
        """``fn`` (default: the method's ``training_loss``) on the step's batch, in the step's precision."""
        with self.precision():
            return self.evaluate(fn if fn is not None else self.method.training_loss)

    def gradients(self, loss: torch.Tensor) -> Grads:
        """``d loss / d params``, averaged over processes as the training loss's gradients are."""
        grads = gradients(loss, self.params, self.create_graph)
        return {n: self.reduce(g) for n, g in grads.items()} if self.reduce is not None else grads

    def transform(self, grads: Grads) -> Grads:
        """The method's gradient transforms, in order (``PromptMethod.gradient_transforms``)."""
        for transform in self.method.gradient_transforms():
            grads = transform(grads, self)
        return grads

    def apply_transforms(self) -> None:
        """Replace the ``.grad`` of the step's parameters by their transforms (after the backward pass).

        A parameter without a gradient is shown to the transforms as zeros and keeps none.
        """
        if not self.method.gradient_transforms():
            return
        grads = {n: p.grad if p.grad is not None else torch.zeros_like(p) for n, p in self.params.items()}
        with torch.enable_grad():  # the optimizer's step, which runs this, turns gradients off
            transformed = self.transform(grads)
        for name, p in self.params.items():
            if p.grad is not None:
                p.grad = transformed[name].detach()
