"""PromptMethod: the LightningModule every method subclasses.

A method owns its prompt parameters and a frozen :class:`ClipBackbone`. Subclasses implement
``build(classnames, templates)`` (create parameters) and ``logits(images)``; the base supplies the
training step (``vlpt.methods.step``: cross-entropy, overridable through ``training_loss``, and the
gradient hook ``transform_gradients``, which may edit the prompt's gradients between the backward pass
and the optimizer step), the optimizer and schedule from the method's config, ``set_classnames`` for
novel / cross-dataset evaluation, and a state dict that holds the method's own tensors only (a
checkpoint is kilobytes, never a copy of CLIP). The same step drives single-task training, the
multitask module and GRAM's inner step. Devices and precision belong to the Lightning Trainer, never
to a method.

Test-time methods (``adapts_at_test_time``, see ``vlpt.methods.tpt``) also provide
``test_time_dataset``, ``start_episodes``, ``images_per_batch``, ``encode_views`` and ``adapt_batch`` (with
``adapt_and_predict`` and ``adapt_on_features`` for one image): they adapt to each test image and restore
their state after it.
"""
from __future__ import annotations

import abc
import dataclasses
import math
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Literal, Sequence

import lightning as L
import torch
import torch.nn.functional as F
from torch.utils.hooks import RemovableHandle

from vlpt.backbone import ClipBackbone
from vlpt.errors import CheckpointError
from vlpt.methods.step import GradientTransform, Grads, TrainingStep, process_mean, training_precision
from vlpt.prompts.context import TextContext
from vlpt.results.store import writer_temp_path

BACKBONE_PREFIX = "backbone."


@dataclass
class MethodConfig:
    """Optimization settings shared by every method (CoOp's defaults)."""

    #: fields that trade memory or time for nothing else: runs differing only in them are the same run
    result_neutral: ClassVar[tuple[str, ...]] = ()

    optimizer: Literal["sgd", "adamw"] = "sgd"
    lr: float = 0.002
    momentum: float = 0.9
    weight_decay: float = 5e-4
    batch_size: int = 32
    #: epochs, or a mapping shots -> epochs (CoOp trains longer with more shots)
    epochs: int | dict[int, int] = 200
    scheduler: Literal["cosine", "constant"] = "cosine"
    warmup_epochs: int = 1
    warmup_lr: float = 1e-5
    #: a checkpoint whose prompt tensors (same name and shape) initialise this method:
    #: a prompt learned on source tasks (MVLPT) or a meta-learned initialisation (GRAM)
    init_from: str | None = None
    #: a GRAM gradient regulator (``*.regulator.pt``) that the harness attaches to this method's training
    #: step as a gradient transform (``vlpt.meta.gram.attach_regulator``); the method itself ignores it
    regulator_from: str | None = None

    def __post_init__(self):
        if self.lr <= 0:
            raise ValueError(f"lr must be positive, got {self.lr}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {self.batch_size}")
        epochs = self.epochs.values() if isinstance(self.epochs, dict) else [self.epochs]
        if not epochs or min(epochs) < 1:
            raise ValueError(f"epochs must be at least 1 (or a non-empty mapping shots -> epochs), got {self.epochs}")

    def epochs_for(self, shots: int, dataset: str | None = None) -> int:
        """Epoch count for ``shots`` training images per class (of ``dataset``, which a method config with
        per-dataset epochs reads)."""
        return epochs_at(self.epochs, shots)

    def training_steps(self, shots: int) -> int | None:
        """Optimizer steps a run at ``shots`` images per class stops after, within its last epoch (CLIP-LoRA
        counts iterations, not epochs); None: whole epochs."""
        return None

    def run_epochs(self, shots: int, dataset: str | None, n_train: int) -> int:
        """Epochs of a run on ``n_train`` training images: ``epochs_for``, or as many epochs as
        ``training_steps`` needs at ``batch_size``."""
        steps = self.training_steps(shots)
        if steps is None:
            return self.epochs_for(shots, dataset)
        return max(1, math.ceil(steps / max(1, math.ceil(n_train / self.batch_size))))


def epochs_at(epochs: int | dict[int, int], shots: int) -> int:
    """``epochs``, or the entry of the largest shot count up to ``shots`` of a mapping shots -> epochs."""
    if isinstance(epochs, int):
        return epochs
    eligible = [k for k in sorted(epochs) if k <= shots] or [min(epochs)]
    return epochs[eligible[-1]]


class PromptMethod(L.LightningModule, abc.ABC):
    """Base class of all methods; see the module docstring for the contract."""

    Config: ClassVar[type[MethodConfig]] = MethodConfig
    #: registry name, set by ``register_method``'s caller through the class attribute
    name: ClassVar[str] = ""
    #: False for methods that learn nothing from training images (zero-shot)
    trains: ClassVar[bool] = True
    #: True for methods that adapt to every test image (evaluated by ``vlpt.tta.evaluate``)
    adapts_at_test_time: ClassVar[bool] = False
    #: how a test-time method's state meets the test stream: "episodic" (every image adapts from the same
    #: starting state, protocol test_time) or "online" (state carries from one image to the next, protocol
    #: online_test_time, in an order drawn from the run's seed)
    test_stream: ClassVar[str] = "episodic"
    #: True for a test-time method that reads labelled images without gradient training (DMN-TF): protocol
    #: online_test_time then gives it ``shots``
    reads_labelled_images: ClassVar[bool] = False
    #: "classification", or "segmentation" for methods on a segmentation model (``vlpt.seg.method``)
    task: ClassVar[str] = "classification"
    #: True when images reach the method only as ``backbone.encode_image(images)`` of the unprompted,
    #: frozen tower (through ``image_features``): the harness may then give it stored features instead of
    #: images (``vlpt.data.feature_cache``)
    frozen_image_features: ClassVar[bool] = False
    #: True for a test-time method that sees its views only as ``encode_image`` of the unprompted, frozen tower,
    #: one batch per image, and adapts with ``adapt_on_features``: the harness may then give it stored view
    #: features (``vlpt.tta.view_features``)
    frozen_view_features: ClassVar[bool] = False
    #: why the method cannot train on several tasks at once (protocol multitask), or None when it can
    multitask_refusal: ClassVar[str | None] = None

    def __init__(self, backbone: ClipBackbone, classnames: Sequence[str], templates: Sequence[str],
                 config: MethodConfig | None = None):
        super().__init__()
        self.backbone = backbone
        self.config = config or self.Config()
        self.max_epochs = 1
        self.classnames = list(classnames)
        self.templates = list(templates)
        self._gradient_transforms: OrderedDict[int, GradientTransform] = OrderedDict()
        self._pending_step: TrainingStep | None = None
        self.build(self.classnames, self.templates)
        if self.config.init_from:
            self.initialize_from(self.config.init_from)

    # ---- to implement ------------------------------------------------------------------
    def build(self, classnames: list[str], templates: list[str]) -> None:
        """Create the method's parameters for the training classes."""

    @abc.abstractmethod
    def logits(self, images: torch.Tensor) -> torch.Tensor:
        """Class scores ``[B, C]`` for the current class names."""

    def update_classnames(self, classnames: list[str], templates: list[str]) -> None:
        """Rebuild what depends on the class names (prompts, classifier rows)."""

    # ---- provided ----------------------------------------------------------------------
    def image_features(self, inputs: torch.Tensor) -> torch.Tensor:
        """Frozen image features ``[B, D]`` of images ``[B, 3, H, W]``; stored features ``[B, D]`` pass
        through (cast to the backbone's dtype)."""
        if inputs.dim() == 2:
            return inputs.to(self.backbone.dtype)
        return self.backbone.encode_image(inputs)

    def set_classnames(self, classnames: Sequence[str], templates: Sequence[str] | None = None) -> None:
        """Score against another list of classes (novel classes, another dataset); a list the method refuses
        leaves it as it was."""
        classnames, templates = list(classnames), list(templates) if templates is not None else self.templates
        self.update_classnames(classnames, templates)
        self.classnames, self.templates = classnames, templates

    @classmethod
    def unseen_classes(cls, config: MethodConfig) -> Literal["any", "subset", "none"]:
        """Which class lists the method can score after training: any (novel classes too), only a
        subset of its training classes, or only those. The suite checks this against the protocol."""
        return "any"

    @classmethod
    def hyperparameter_selection(cls, config: MethodConfig) -> Literal["fixed", "validation"]:
        """How a run's hyperparameters are chosen: fixed (the reference's settings, at most per dataset, never
        looking at the run's images) or validation (searched on the run's validation images). Records keep it
        (``config.selection``) and the leaderboard shows it."""
        return "fixed"

    def fit_without_gradients(self, datamodule) -> bool:
        """Hook for methods fitted in closed form; return True when fitting is done."""
        return not self.trains

    def training_loss(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(self.logits(images), labels)

    def transform_gradients(self, grads: Grads, step: TrainingStep) -> Grads:
        """Hook: the gradients of ``prompt_parameters()`` (by name) to step with, given those of the loss.

        Runs after the backward pass and before the optimizer step, under every driver (single-task,
        multitask, GRAM's inner step). ``step.loss(fn)`` evaluates another loss on the step's batch and
        ``step.gradients(loss)`` differentiates it (a ProGrad-style projection takes the gradient toward
        the zero-shot prediction this way). Default: the gradients unchanged.
        """
        return grads

    def attach_gradient_transform(self, transform: GradientTransform) -> RemovableHandle:
        """Run ``transform(grads, step)`` after the method's own ``transform_gradients`` in every training
        step (GRAM's regulator, attached by the harness); ``handle.remove()`` detaches it."""
        handle = RemovableHandle(self._gradient_transforms)
        self._gradient_transforms[handle.id] = transform
        return handle

    def gradient_transforms(self) -> list[GradientTransform]:
        """What a training step applies to the gradients, in order: the method's ``transform_gradients``
        (when its class overrides it), then the attached transforms."""
        own = [self.transform_gradients] if type(self).transform_gradients is not PromptMethod.transform_gradients \
            else []
        return own + list(self._gradient_transforms.values())

    def training_step(self, batch, batch_idx):
        images, labels = batch
        self._pending_step = TrainingStep(self, lambda fn: fn(images, labels), reduce=process_mean(self),
                                          precision=training_precision(self))
        loss = self._pending_step.loss()
        self.log("train_loss", loss, prog_bar=True, on_step=True, on_epoch=False, batch_size=len(labels))
        return loss

    def on_before_optimizer_step(self, optimizer) -> None:
        step, self._pending_step = self._pending_step, None
        if step is not None:
            step.apply_transforms()

    def on_train_batch_end(self, outputs, batch, batch_idx) -> None:
        if self.trainer.fit_loop.epoch_loop.batch_progress.is_last_batch:
            self.epoch_finished(self.current_epoch, self.max_epochs)

    def epoch_finished(self, epoch: int, epochs: int) -> None:
        """Hook: training epoch ``epoch`` (0-based) of ``epochs`` ended with its last batch's optimizer step,
        before Lightning's epoch-end hooks (a mid-training checkpoint is written in one); PromptSRC aggregates
        its prompts here. The multitask module calls it too. Default: nothing."""

    @torch.no_grad()
    def predict(self, images: torch.Tensor) -> torch.Tensor:
        """Predicted labels for a batch of images (or of their stored features)."""
        return self.logits(images).argmax(dim=-1)

    def trainable_parameters(self) -> list[torch.nn.Parameter]:
        return [p for n, p in self.named_parameters() if p.requires_grad and not n.startswith(BACKBONE_PREFIX)]

    def prompt_parameters(self) -> dict[str, torch.nn.Parameter]:
        """``trainable_parameters()`` by the names their checkpoint uses: what gradient transforms edit and
        what GRAM meta-learns."""
        wanted = {id(p) for p in self.trainable_parameters()}
        return {name: p for name, p in self.named_parameters() if id(p) in wanted}

    def text_prompt_tokens(self) -> int:
        """Tokens the method's text prompt places beside a class name (its learned text context; GRAM fits
        captions into the rest of the text context)."""
        return max((m.n_ctx for m in self.modules() if isinstance(m, TextContext)), default=0)

    def build_optimizer(self, params: list[torch.nn.Parameter]) -> torch.optim.Optimizer:
        """The config's optimizer over ``params`` (SGD with momentum, or AdamW)."""
        cfg = self.config
        if cfg.optimizer == "sgd":
            return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
        return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)

    def configure_optimizers(self):
        cfg = self.config
        optimizer = self.build_optimizer(self.trainable_parameters())
        total, warmup = self.max_epochs, cfg.warmup_epochs

        def factor_from(base_lr: float):
            # Dassl (CoOp's trainer library; its ConstantWarmupScheduler with WARMUP_RECOUNT): a constant warm-up
            # lr for ``warmup`` epochs, every parameter group at the same ``warmup_lr``, then a cosine of period
            # ``total`` epochs whose count starts after the warm-up, stepped per epoch: the first epoch after the
            # warm-up runs at each group's full lr
            def factor(epoch: int) -> float:
                if epoch < warmup:
                    return cfg.warmup_lr / base_lr
                if cfg.scheduler == "constant":
                    return 1.0
                return 0.5 * (1.0 + math.cos(math.pi * (epoch - warmup) / max(1, total)))
            return factor

        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, [factor_from(g["lr"]) for g in optimizer.param_groups])
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "epoch"}}

    # ---- checkpoints of the method's own tensors -----------------------------------------
    def frozen_prefixes(self) -> tuple[str, ...]:
        """State-dict prefixes of frozen modules that checkpoints leave out: the backbone's, and a
        subclass's own frozen parts (a segmentation decoder kept frozen)."""
        return (BACKBONE_PREFIX,)

    def state_dict(self, *args, **kwargs):
        state = super().state_dict(*args, **kwargs)
        for key in [k for k in state if k.startswith(self.frozen_prefixes())]:
            del state[key]
        return state

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        own = self.state_dict()
        if strict:
            missing, unexpected = sorted(set(own) - set(state_dict)), sorted(set(state_dict) - set(own))
            if missing or unexpected:
                raise CheckpointError(
                    f"{self.name} checkpoint does not fit: missing {missing[:5]}, unexpected {unexpected[:5]}"
                )
        for key, value in state_dict.items():
            if key in own and tuple(own[key].shape) != tuple(value.shape):
                raise CheckpointError(
                    f"{self.name} checkpoint tensor {key} has shape {tuple(value.shape)}, "
                    f"this model expects {tuple(own[key].shape)}"
                )
        frozen = {k: v for k, v in super().state_dict().items() if k.startswith(self.frozen_prefixes())}
        return super().load_state_dict({**frozen, **state_dict}, strict=strict, assign=assign)

    def record_extra(self) -> dict:
        """Hook: what the run's record keeps beside the config (IPO: every prompt it tried), under these keys."""
        return {}

    @classmethod
    def config_refusal(cls, config: MethodConfig) -> str | None:
        """Hook: why ``config`` cannot run here (a missing endpoint), checked when the suite loads; None when it can."""
        return None

    def checkpoint_extra(self) -> dict:
        """Hook: what a checkpoint keeps besides tensors (strings, numbers); default nothing."""
        return {}

    def restore_checkpoint_extra(self, extra: dict) -> None:
        """Hook: take back what ``checkpoint_extra`` kept, before the tensors are loaded."""

    def save_checkpoint(self, path: str | Path) -> Path:
        """Write the method's own tensors and its identity (method, backbone, classes, templates, config)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        payload = {
            "method": self.name,
            "backbone": self.backbone.describe(),
            "classnames": self.classnames,
            "templates": self.templates,
            "config": dataclasses.asdict(self.config),
            "state_dict": {k: v.detach().cpu() for k, v in self.state_dict().items()},
            **({"extra": extra} if (extra := self.checkpoint_extra()) else {}),
        }
        tmp = writer_temp_path(path)
        torch.save(payload, tmp)
        tmp.replace(path)
        return path

    def initialize_from(self, path: str | Path) -> list[str]:
        """Copy the tensors of a prompt checkpoint that this method also has (same name and shape).

        Returns the names copied. A checkpoint from another backbone, a tensor of another shape, or
        one sharing no tensor with this method raises CheckpointError.
        """
        path = Path(path)
        if not path.is_file():
            raise CheckpointError(f"init_from checkpoint {path} does not exist")
        payload = torch.load(path, map_location="cpu", weights_only=True)
        if payload.get("backbone") != self.backbone.describe():
            raise CheckpointError(
                f"init_from checkpoint {path} was trained on backbone {payload.get('backbone')}, "
                f"not {self.backbone.describe()}"
            )
        own = {**dict(self.named_parameters()), **dict(self.named_buffers())}
        copied = []
        with torch.no_grad():
            for key, value in payload["state_dict"].items():
                if key.startswith(self.frozen_prefixes()) or key not in own:
                    continue
                if tuple(own[key].shape) != tuple(value.shape):
                    raise CheckpointError(
                        f"init_from checkpoint {path}: {key} has shape {tuple(value.shape)}, "
                        f"{self.name} expects {tuple(own[key].shape)}"
                    )
                own[key].copy_(value)
                copied.append(key)
        if not copied:
            raise CheckpointError(
                f"init_from checkpoint {path} (method {payload.get('method')}) shares no prompt tensor with "
                f"{self.name}; it holds {sorted(payload['state_dict'])[:5]}"
            )
        return copied

    def load_checkpoint(self, path: str | Path) -> None:
        """Load a checkpoint written by ``save_checkpoint``; a mismatch raises CheckpointError."""
        path = Path(path)
        if not path.is_file():
            raise CheckpointError(f"method checkpoint {path} does not exist")
        payload = torch.load(path, map_location="cpu", weights_only=True)
        if payload.get("method") != self.name:
            raise CheckpointError(f"checkpoint {path} holds method {payload.get('method')!r}, not {self.name!r}")
        if payload.get("backbone") != self.backbone.describe():
            raise CheckpointError(
                f"checkpoint {path} was trained on backbone {payload.get('backbone')}, not {self.backbone.describe()}"
            )
        if payload["classnames"] != self.classnames:
            self.set_classnames(payload["classnames"])
        self.restore_checkpoint_extra(payload.get("extra", {}))
        try:
            self.load_state_dict(payload["state_dict"])
        except CheckpointError as exc:
            raise CheckpointError(f"checkpoint {path}: {exc}") from exc


class TrainedClassesCheckpoint:
    """Mixin for a method with one row of tensors per training class (``trained_classnames``): its checkpoints
    keep those classes' names, and a loaded checkpoint maps the current classes onto its rows again
    (``update_classnames``)."""

    def checkpoint_extra(self) -> dict:
        return {"trained_classnames": self.trained_classnames}

    def restore_checkpoint_extra(self, extra: dict) -> None:
        self.trained_classnames = list(extra.get("trained_classnames", self.trained_classnames))
        self.update_classnames(self.classnames, self.templates)


def cosine_logits(image_features: torch.Tensor, text_features: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """CLIP's scaled cosine similarity between images ``[B, D]`` and classes ``[C, D]``."""
    return scale * F.normalize(image_features, dim=-1) @ F.normalize(text_features, dim=-1).T
