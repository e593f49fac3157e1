"""GRAM: Gradient-Regulated Meta-Prompt learning (Li, Gao, Wei, Tang, Zhang, Li, Ji, Tian, Chua, Zhuang,
"Gradient-Regulated Meta-Prompt Learning for Generalizable Vision-Language Models", ICCV 2023,
arXiv:2303.06571).

What the paper defines (abstract and introduction; no official code has been released):

* GRAM *jointly meta-learns* (a) an initialization of the soft prompt and (b) a lightweight
  *gradient regulating function* that transforms the raw fine-tuning gradient "into a consistent
  direction across domains", in a MAML-style bi-level scheme, "using only the unlabeled image-text
  pre-training data". It is model-agnostic: the meta-learned initialization (and regulator) then
  serve any prompt-tuning method (CoOp, VPT, UPT; both towers at once in the paper's UNIGRAM).
* A meta-training task has a support set and a query set drawn from *different domains* of the
  image-text data (the paper groups the data into domains by clustering; its journal extension calls
  the algorithm Cross-Modal Hierarchical Clustering). Inner step on the support batch with the
  regulated gradient, ``theta' = theta - alpha * R_phi(grad L_support(theta))``; outer loss
  ``L_query(theta')`` on the query batch from the other domain, minimized over both ``theta`` and
  ``phi`` (so ``phi`` learns to keep the part of a domain's gradient that also helps other domains).

What this implementation chose where the paper (as far as could be read) leaves it open:

1. **Image-caption batches as classification.** A batch of pairs is a classification problem over
   the batch's *distinct* captions: ``method.set_classnames(captions, ["{}"])`` makes each caption a
   "class" (CoOp builds ``[ctx] caption.`` prompts, so a caption's trailing period is dropped and
   captions are cut, word by word, to fit the text context next to the method's prompt tokens),
   ``method.logits(images)`` is ``[B, U]`` and image ``i``'s target is its caption's column (the
   diagonal when captions are distinct). Duplicated captions share one column instead of competing.
   The default loss is CLIP's symmetric contrastive loss (image->caption cross-entropy plus
   caption->image cross-entropy, whose target spreads evenly over the images sharing a caption);
   ``objective="image_to_text"`` keeps only the first term and ``objective="method"`` uses the
   method's own ``training_loss`` (KgCoOp's penalty included).
2. **The regulating function** (``GradientRegulator``). The exact form in GRAM could not be read; the
   form chosen is an input-dependent, element-wise gate in (0, ``max_gain``):
   ``R(g) = max_gain * sigmoid(MLP(g / rms(g))) * g`` with one two-layer MLP (width -> hidden ->
   width) per prompt tensor, applied to each row (token) of the tensor's gradient. It starts near
   the identity (``max_gain`` 2, last layer near zero: plain MAML) and can damp or amplify each
   coordinate depending on the gradient, i.e. change the step's direction. It is the pattern of the
   gradient regulators that build on GRAM: ProMetaR (Park et al., CVPR 2024; a sigmoid gate computed
   from the gradients by linear layers) and SUPMER (Pan, Li et al. 2023, the same group's meta-prompt
   method for language models; an MLP of the gradient rescaled to the raw gradient's norm). The
   input is normalized so the gate sees the direction and relative sizes, not the loss scale.
3. **Second order by default.** The inner gradient is taken with ``create_graph=True`` so the outer
   loss reaches ``theta`` through the inner step and ``phi`` through ``R``; ``first_order=True``
   drops the second-order term for ``theta`` (``phi`` still learns).
4. **Optimizers:** Adam for the initialization (``outer_lr``) and for the regulator
   (``regulator_lr``, default ``outer_lr``), one outer step per meta-step averaged over
   ``tasks_per_step`` (support, query) pairs; support and query domains drawn uniformly without
   replacement per task; batches drawn without replacement within a domain.
5. **Downstream use of the regulator.** GRAM regulates the gradients of the downstream few-shot
   tuning as well: ``attach_regulator`` adds the regulator to a method's training step as a gradient
   transform (``vlpt.methods.step``), after the method's own; the harness attaches it to a run whose
   config names it in ``regulator_from`` (a suite's ``init_from: init:NAME`` sets both).
6. **The method's own gradient transforms** (``PromptMethod.transform_gradients``) shape the inner
   step's gradient before the regulator does, as they shape a downstream training step:
   ``theta' = theta - alpha * R_phi(T(grad L_support(theta)))``. The outer (meta-)gradient is not
   transformed.

The core is written for plain tensors (``regulated_update``, ``adapt``, ``BilevelMetaLearner``), so
it can be checked on toy problems; ``meta_learn_initialization`` runs it on any ``PromptMethod``
through ``torch.func.functional_call`` over the method's ``prompt_parameters()``, writes the result
with ``method.save_checkpoint`` (what ``MethodConfig.init_from`` consumes) and the regulator beside it.
"""
from __future__ import annotations

import dataclasses
import math
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Literal, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call
from torch.nn.attention import SDPBackend, sdpa_kernel

from vlpt.errors import CheckpointError, ConfigError
from vlpt.meta.captions import CaptionDataset, CaptionPair
from vlpt.methods.step import BatchLoss, Grads, TrainingStep, gradients
from vlpt.results.store import writer_temp_path

Params = dict[str, torch.Tensor]
LossFn = Callable[[Params], torch.Tensor]
#: the method's gradient transforms at given parameter values: ``transform(params, grads)`` -> grads
InnerTransform = Callable[[Params, Grads], Grads]
Objective = Literal["contrastive", "image_to_text", "method"]
REGULATOR_FORMAT = "vlpt-gram-regulator-v1"


# ---- the gradient regulating function ------------------------------------------------------------
class _GateNet(nn.Module):
    def __init__(self, width: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(width, hidden)
        self.fc2 = nn.Linear(hidden, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.relu(self.fc1(x)))


class GradientRegulator(nn.Module):
    """R_phi: an element-wise gate on each prompt tensor's gradient, computed from that gradient.

    ``shapes`` maps parameter names to their shapes; each tensor gets a small MLP over its last
    dimension (its rows, e.g. context tokens, share it). ``gate(name, g)`` lies in (0, max_gain);
    ``regulate(name, g) = gate * g``; ``forward({name: g})`` regulates a dict of gradients.
    """

    def __init__(self, shapes: Mapping[str, Sequence[int]], hidden: int = 16, max_gain: float = 2.0,
                 init_std: float = 0.01, seed: int = 0, eps: float = 1e-12):
        super().__init__()
        if not shapes:
            raise ConfigError("a gradient regulator needs at least one parameter shape")
        if hidden < 1 or max_gain <= 0:
            raise ConfigError(f"regulator hidden={hidden} must be >= 1 and max_gain={max_gain} > 0")
        self.shapes = {name: tuple(int(s) for s in shape) for name, shape in shapes.items()}
        self.hidden, self.max_gain, self.init_std, self.eps = hidden, float(max_gain), init_std, eps
        self.nets = nn.ModuleDict()
        generator = torch.Generator().manual_seed(seed)
        for name, shape in self.shapes.items():
            width = shape[-1] if shape else 1
            net = _GateNet(width, hidden)
            with torch.no_grad():
                bound = 1.0 / math.sqrt(width)
                net.fc1.weight.copy_(torch.rand(net.fc1.weight.shape, generator=generator) * 2 * bound - bound)
                net.fc1.bias.zero_()
                net.fc2.weight.copy_(torch.randn(net.fc2.weight.shape, generator=generator) * init_std)
                net.fc2.bias.zero_()
            self.nets[self.key(name)] = net

    @staticmethod
    def key(name: str) -> str:
        """ModuleDict keys cannot hold dots."""
        return name.replace(".", "__")

    @classmethod
    def for_parameters(cls, params: Mapping[str, torch.Tensor], **kwargs) -> "GradientRegulator":
        return cls({name: tuple(p.shape) for name, p in params.items()}, **kwargs)

    def settings(self) -> dict:
        return {"shapes": {k: list(v) for k, v in self.shapes.items()}, "hidden": self.hidden,
                "max_gain": self.max_gain, "init_std": self.init_std}

    def gate(self, name: str, grad: torch.Tensor) -> torch.Tensor:
        if name not in self.shapes:
            raise ConfigError(f"gradient regulator has no entry for parameter {name!r}; it knows {sorted(self.shapes)}")
        width = self.shapes[name][-1] if self.shapes[name] else 1
        if (grad.shape[-1] if grad.dim() else 1) != width:
            raise ConfigError(
                f"gradient of {name!r} has shape {tuple(grad.shape)}; the regulator expects rows of width {width}"
            )
        net = self.nets[self.key(name)]
        rows = grad.reshape(-1, width).to(net.fc1.weight.dtype)
        normalized = rows / (rows.pow(2).mean().sqrt() + self.eps)
        return (self.max_gain * torch.sigmoid(net(normalized))).reshape(grad.shape).to(grad.dtype)

    def regulate(self, name: str, grad: torch.Tensor) -> torch.Tensor:
        return self.gate(name, grad) * grad

    def forward(self, grads: Mapping[str, torch.Tensor]) -> Params:
        return {name: self.regulate(name, g) for name, g in grads.items()}


# ---- the bi-level core on plain tensors --------------------------------------------------------
def regulated_update(params: Mapping[str, torch.Tensor], loss: torch.Tensor, regulator: Callable | None,
                     lr: float, create_graph: bool = True,
                     transform: InnerTransform | None = None) -> tuple[Params, Params, Params]:
    """One inner step ``theta' = theta - lr * R(T(grad loss))``; returns (theta', T(grad loss), regulated).

    ``T`` is the method's gradient transforms (``transform``; default: none). With ``create_graph`` the
    step stays differentiable (second-order MAML); without it the raw gradient is a constant, but
    ``theta'`` still depends on ``theta`` and on R's parameters. A parameter the loss does not reach
    gets a zero gradient.
    """
    grads = gradients(loss, params, create_graph)
    if transform is not None:
        grads = transform(dict(params), grads)
    regulated = regulator(grads) if regulator is not None else grads
    return {n: params[n] - lr * regulated[n] for n in params}, grads, regulated


def adapt(params: Mapping[str, torch.Tensor], support_loss: LossFn, regulator: Callable | None, inner_lr: float,
          inner_steps: int = 1, first_order: bool = False, stats: dict | None = None,
          transform: InnerTransform | None = None) -> tuple[Params, list[float]]:
    """``inner_steps`` regulated gradient steps on the support loss from ``params`` (``transform``: the
    method's gradient transforms, applied before the regulator).

    With a ``stats`` dict, ``stats["gain"]`` receives |R(g)| / |g| of the first step (the regulator's
    overall scaling of the gradient, 1 for the identity).
    """
    fast = dict(params)
    losses = []
    for step in range(inner_steps):
        loss = support_loss(fast)
        fast, raw, regulated = regulated_update(fast, loss, regulator, inner_lr, create_graph=not first_order,
                                                transform=transform)
        losses.append(float(loss.detach()))
        if stats is not None and step == 0:
            with torch.no_grad():
                raw_norm = torch.sqrt(sum(g.pow(2).sum() for g in raw.values()))
                reg_norm = torch.sqrt(sum(r.pow(2).sum() for r in regulated.values()))
                stats["gain"] = float(reg_norm / raw_norm) if raw_norm > 0 else 1.0
    return fast, losses


@dataclass
class MetaTask:
    """One meta-training task: a support loss (inner step) and a query loss (outer objective), and the
    method's gradient transforms for the inner step (``support_transform``)."""

    support_loss: LossFn
    query_loss: LossFn
    info: dict = field(default_factory=dict)
    support_transform: InnerTransform | None = None


class BilevelMetaLearner:
    """Meta-learns ``params`` (an initialization, updated in place) and the regulator's parameters.

    ``step(tasks)``: for each task adapt on the support loss with the regulated gradient, evaluate
    the query loss at the adapted parameters, back-propagate (averaged over tasks) into both the
    initialization and the regulator, then take one optimizer step on each.
    """

    def __init__(self, params: Mapping[str, torch.Tensor], regulator: nn.Module | None, inner_lr: float,
                 outer_lr: float, regulator_lr: float | None = None, inner_steps: int = 1,
                 first_order: bool = False, learn_regulator: bool = True):
        if inner_steps < 1:
            raise ConfigError(f"inner_steps must be at least 1, got {inner_steps}")
        for name, p in params.items():
            if not (p.is_leaf and p.requires_grad):
                raise ConfigError(f"meta-learned parameter {name!r} must be a leaf tensor that requires grad")
        self.params = dict(params)
        self.regulator = regulator
        self.inner_lr, self.inner_steps, self.first_order = inner_lr, inner_steps, first_order
        self.optimizer = torch.optim.Adam(list(self.params.values()), lr=outer_lr)
        reg_params = list(regulator.parameters()) if regulator is not None else []
        self.learn_regulator = learn_regulator and bool(reg_params)
        for p in reg_params:
            p.requires_grad_(self.learn_regulator)
        self.regulator_optimizer = (
            torch.optim.Adam(reg_params, lr=regulator_lr if regulator_lr is not None else outer_lr)
            if self.learn_regulator else None
        )

    def step(self, tasks: Sequence[MetaTask]) -> dict:
        if not tasks:
            raise ConfigError("a meta-step needs at least one task")
        self.optimizer.zero_grad(set_to_none=True)
        if self.regulator_optimizer is not None:
            self.regulator_optimizer.zero_grad(set_to_none=True)
        support, query, gains = [], [], []
        for task in tasks:
            stats: dict = {}
            adapted, support_losses = adapt(self.params, task.support_loss, self.regulator, self.inner_lr,
                                            self.inner_steps, self.first_order, stats, task.support_transform)
            outer = task.query_loss(adapted) / len(tasks)
            outer.backward()
            support.append(support_losses[0])
            query.append(float(outer.detach()) * len(tasks))
            gains.append(stats["gain"])
        self.optimizer.step()
        if self.regulator_optimizer is not None:
            self.regulator_optimizer.step()
        mean = lambda values: sum(values) / len(values)  # noqa: E731
        return {"support_loss": mean(support), "query_loss": mean(query), "gain": mean(gains)}


# ---- prompt methods on image-caption batches -----------------------------------------------------
class _MethodCall(nn.Module):
    """Lets ``functional_call`` run any function of a method (a batch loss) with given tensors."""

    def __init__(self, method: nn.Module):
        super().__init__()
        self.method = method

    def forward(self, function: Callable, *args):
        return function(*args)


def named_trainable_parameters(method) -> dict[str, nn.Parameter]:
    """``method.prompt_parameters()``; a method without any raises ConfigError."""
    named = method.prompt_parameters()
    if not named:
        raise ConfigError(f"method {method.name or type(method).__name__} has no prompt parameters to meta-learn")
    return named


def caption_prompt(caption: str) -> str:
    """A caption as a prompt 'class name': whitespace collapsed, trailing periods dropped (CoOp adds one)."""
    return " ".join(caption.split()).rstrip(" .") or caption.strip()


def fit_caption(caption: str, tokenizer, max_tokens: int) -> str:
    """Drop words from the end until the caption has at most ``max_tokens`` BPE tokens."""
    words = caption.split()
    while len(words) > 1:
        row = tokenizer([" ".join(words)])[0]
        used = int((row != 0).sum()) - 2  # without start and end tokens
        if row[-1] == 0 and used <= max_tokens:
            break
        words = words[:-1]
    return " ".join(words)


def caption_targets(captions: Sequence[str]) -> tuple[list[str], torch.Tensor]:
    """Distinct captions in first-seen order and each pair's index among them."""
    index: dict[str, int] = {}
    labels = [index.setdefault(c, len(index)) for c in captions]
    return list(index), torch.tensor(labels, dtype=torch.long)


def caption_contrastive_loss(logits: torch.Tensor, labels: torch.Tensor, symmetric: bool = True) -> torch.Tensor:
    """Image->caption cross-entropy, plus (``symmetric``) caption->image cross-entropy, averaged.

    ``logits`` is ``[B, U]`` over the batch's distinct captions; the caption->image target of a
    caption is spread evenly over the images that share it.
    """
    image_to_text = F.cross_entropy(logits, labels)
    if not symmetric:
        return image_to_text
    targets = F.one_hot(labels, logits.shape[1]).T.to(logits.dtype)
    targets = targets / targets.sum(dim=1, keepdim=True)
    return 0.5 * (image_to_text + F.cross_entropy(logits.T, targets))


class _CaptionBatch:
    """A batch of image-caption pairs as a training step of ``method`` at given parameter values
    (``vlpt.methods.step``): called with parameters, its loss (the objective); ``transform(params, grads)``,
    the method's gradient transforms there (``create_graph``: differentiable, for second order)."""

    def __init__(self, method, call: _MethodCall, images: torch.Tensor, captions: list[str], objective: Objective,
                 create_graph: bool = True):
        self.method, self.call, self.images, self.create_graph = method, call, images, create_graph
        self.prompts, labels = caption_targets(captions)
        self.labels = labels.to(images.device)
        if objective == "method":
            self.objective: BatchLoss = method.training_loss
        else:
            symmetric = objective == "contrastive"
            self.objective = lambda images, labels: caption_contrastive_loss(method.logits(images), labels, symmetric)

    def step(self, params: Params) -> TrainingStep:
        def evaluate(fn: BatchLoss) -> torch.Tensor:
            if self.method.classnames != self.prompts:
                self.method.set_classnames(self.prompts, ["{}"])
            named = {f"method.{name}": t for name, t in params.items()}
            return functional_call(self.call, named, (fn, self.images, self.labels))

        return TrainingStep(self.method, evaluate, params, self.create_graph)

    def __call__(self, params: Params) -> torch.Tensor:
        return self.step(params).loss(self.objective)

    def transform(self, params: Params, grads: Grads) -> Grads:
        return self.step(params).transform(grads)


@dataclass
class GramResult:
    """What ``meta_learn_initialization`` produced."""

    regulator: GradientRegulator
    history: list[dict]
    config: dict
    checkpoint: Path | None = None
    regulator_path: Path | None = None


def regulator_path_for(checkpoint: str | Path) -> Path:
    """The regulator file written beside an initialization checkpoint: ``init.pt`` -> ``init.regulator.pt``."""
    checkpoint = Path(checkpoint)
    return checkpoint.with_name(f"{checkpoint.stem}.regulator.pt")


def meta_learn_initialization(
    method,
    domains: Mapping[str, Sequence[CaptionPair]],
    steps: int = 300,
    inner_lr: float = 0.01,
    outer_lr: float = 0.005,
    batch_size: int = 32,
    inner_steps: int = 1,
    seed: int = 0,
    transform: Callable | None = None,
    *,
    regulator: GradientRegulator | None = None,
    regulator_lr: float | None = None,
    regulator_hidden: int = 16,
    regulator_max_gain: float = 2.0,
    learn_regulator: bool = True,
    tasks_per_step: int = 1,
    first_order: bool = False,
    objective: Objective = "contrastive",
    max_caption_tokens: int | None = None,
    out_path: str | Path | None = None,
    progress: bool = False,
    notes: Mapping | None = None,
) -> GramResult:
    """Meta-learn the initialization of ``method.trainable_parameters()`` and a gradient regulator (GRAM).

    Each meta-step draws ``tasks_per_step`` tasks; a task is a support batch of ``batch_size`` pairs
    from one domain and a query batch from another, each a classification over its captions (see the
    module docstring). The method's parameters are updated in place and hold the meta-learned
    initialization afterwards; its class names are restored. With ``out_path`` the method is saved
    with ``save_checkpoint(out_path)`` and the regulator beside it (``regulator_path_for``).
    Deterministic for a given ``seed`` on a given machine (the global RNG, which random transforms
    use, is seeded inside and restored afterwards). ``notes`` are stored with the run's settings.

    ``history`` has one entry per meta-step: ``support_loss`` (support batch at the initialization),
    ``query_loss`` (query batch after the regulated inner step: the outer objective), ``gain``
    (|R(g)| / |g| of the first inner step) and the domains drawn.

    Defaults (chosen on the starter backbone; the paper's values could not be read): 300 meta-steps,
    batch 32, one inner step at ``inner_lr`` 0.01 (near CoOp's downstream SGD step: lr 0.002 with
    momentum 0.9; larger inner steps, e.g. 0.05, let MAML trade the initialization's own accuracy for
    accuracy after one big step, which downstream tuning with a small lr does not take), Adam at
    ``outer_lr`` 0.005 for both the initialization and the regulator, regulator hidden width 16 and
    ``max_gain`` 2. With them, 200 meta-steps (45 s on 2 CPU cores) on the starter caption pairs
    took a random CoOp context (M=16) from 46% / 16% / 60% zero-shot accuracy on held-out 8x8
    digits / rendered digits / all 24 shapes to 97% / 22% / 73%, and "a photo of a" (M=4) from
    96% / 22% / 73% to 97% / 26% / 72%.
    """
    if steps < 0 or batch_size < 2 or tasks_per_step < 1:
        raise ConfigError(f"GRAM needs steps >= 0, batch_size >= 2, tasks_per_step >= 1; got {steps}, {batch_size}, "
                          f"{tasks_per_step}")
    if objective not in ("contrastive", "image_to_text", "method"):
        raise ConfigError(f"GRAM objective {objective!r}: expected contrastive, image_to_text or method")
    names = sorted(domains)
    small = [f"{d} ({len(domains[d])})" for d in names if len(domains[d]) < 2]
    if len(names) < 2 or small:
        raise ConfigError(
            "GRAM draws support and query batches from different domains: it needs at least two domains of at "
            f"least two image-caption pairs each; got {', '.join(f'{d} ({len(domains[d])})' for d in names) or 'none'}"
        )
    if type(method).unseen_classes(method.config) != "any":
        raise ConfigError(f"GRAM cannot meta-learn {method.name}, which scores only its training classes (a "
                          "class-specific context, csc, or a classifier row per class): the 'classes' of image-caption "
                          "batches change every step; use a shared context")
    backbone = method.backbone
    if transform is None:
        from vlpt.data.transforms import eval_transform

        transform = eval_transform(backbone.image_size, backbone.preprocess_cfg["mean"], backbone.preprocess_cfg["std"])
    budget = (max_caption_tokens if max_caption_tokens is not None
              else backbone.context_length - 3 - method.text_prompt_tokens())
    if budget < 1:
        raise ConfigError(f"no room for captions: the text context holds {backbone.context_length} tokens and the "
                          f"method's prompt takes {method.text_prompt_tokens()}")
    datasets = {d: CaptionDataset(domains[d], transform) for d in names}
    params = named_trainable_parameters(method)
    device = next(iter(params.values())).device
    if regulator is None:
        regulator = GradientRegulator.for_parameters(params, hidden=regulator_hidden, max_gain=regulator_max_gain,
                                                     seed=seed)
    regulator.to(device)
    learner = BilevelMetaLearner(params, regulator, inner_lr, outer_lr, regulator_lr, inner_steps, first_order,
                                 learn_regulator)
    call = _MethodCall(method)
    original_classnames, original_templates = list(method.classnames), list(method.templates)
    prompt_cache: dict[str, str] = {}

    def prompts_of(captions: list[str]) -> list[str]:
        for c in captions:
            if c not in prompt_cache:
                prompt_cache[c] = fit_caption(caption_prompt(c), backbone.tokenizer, budget)
        return [prompt_cache[c] for c in captions]

    generator = torch.Generator().manual_seed(seed)

    def draw(domain: str) -> tuple[torch.Tensor, list[str]]:
        dataset = datasets[domain]
        indices = torch.randperm(len(dataset), generator=generator)[:batch_size].tolist()
        images, captions = dataset.batch(indices)
        return images.to(device), prompts_of(captions)

    history: list[dict] = []
    config = {
        "steps": steps, "inner_lr": inner_lr, "outer_lr": outer_lr,
        "regulator_lr": regulator_lr if regulator_lr is not None else outer_lr, "batch_size": batch_size,
        "inner_steps": inner_steps, "tasks_per_step": tasks_per_step, "first_order": first_order,
        "objective": objective, "learn_regulator": learn_regulator, "seed": seed, "max_caption_tokens": budget,
        "domains": {d: len(domains[d]) for d in names}, "method": method.name, "backbone": backbone.describe(),
        "regulator": regulator.settings() if isinstance(regulator, GradientRegulator) else type(regulator).__name__,
        **dict(notes or {}),
    }
    from tqdm.auto import tqdm

    try:
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            torch.manual_seed(seed)
            bar = tqdm(range(steps), desc="GRAM meta-steps", disable=not progress)
            for step in bar:
                # fused attention kernels (flash, memory-efficient) have no double backward: second-order
                # MAML through the towers needs the math kernel
                attention = sdpa_kernel([SDPBackend.MATH]) if not first_order else nullcontext()
                tasks = []
                for _ in range(tasks_per_step):
                    pick = torch.randperm(len(names), generator=generator)[:2].tolist()
                    support_domain, query_domain = names[pick[0]], names[pick[1]]
                    s_images, s_captions = draw(support_domain)
                    q_images, q_captions = draw(query_domain)
                    support = _CaptionBatch(method, call, s_images, s_captions, objective, not first_order)
                    tasks.append(MetaTask(support, _CaptionBatch(method, call, q_images, q_captions, objective),
                                          {"support": support_domain, "query": query_domain},
                                          support.transform if method.gradient_transforms() else None))
                with attention:
                    stats = learner.step(tasks)
                record = {"step": step + 1, **stats, "support_domains": [t.info["support"] for t in tasks],
                          "query_domains": [t.info["query"] for t in tasks]}
                history.append(record)
                bar.set_postfix(support=f"{stats['support_loss']:.3f}", query=f"{stats['query_loss']:.3f}",
                                gain=f"{stats['gain']:.2f}")
    finally:
        method.set_classnames(original_classnames, original_templates)
    result = GramResult(regulator=regulator, history=history, config=config)
    if out_path is not None:
        result.checkpoint, result.regulator_path = save_gram(method, regulator, out_path, config, history)
    return result


# ---- files -------------------------------------------------------------------------------------------
def save_gram(method, regulator: GradientRegulator, out_path: str | Path, config: dict,
              history: list[dict]) -> tuple[Path, Path]:
    """The initialization via ``method.save_checkpoint`` and the regulator (settings, state, history) beside it."""
    checkpoint = method.save_checkpoint(out_path)
    path = regulator_path_for(checkpoint)
    payload = {
        "format": REGULATOR_FORMAT,
        "method": method.name,
        "backbone": method.backbone.describe(),
        "settings": regulator.settings(),
        "state_dict": {k: v.detach().cpu() for k, v in regulator.state_dict().items()},
        "config": config,
        "history": history,
    }
    tmp = writer_temp_path(path)
    torch.save(payload, tmp)
    tmp.replace(path)
    return checkpoint, path


def load_regulator(path: str | Path) -> GradientRegulator:
    """A regulator written by ``save_gram``; a missing or foreign file raises CheckpointError."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"gradient regulator file {path} does not exist")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # any reader failure means the file is not a regulator
        raise CheckpointError(f"gradient regulator file {path} cannot be read: {exc}") from exc
    if not isinstance(payload, dict) or payload.get("format") != REGULATOR_FORMAT:
        raise CheckpointError(f"{path} is not a GRAM regulator file (format {REGULATOR_FORMAT})")
    settings = payload["settings"]
    regulator = GradientRegulator(settings["shapes"], hidden=settings["hidden"], max_gain=settings["max_gain"],
                                  init_std=settings["init_std"])
    regulator.load_state_dict(payload["state_dict"])
    return regulator


class RegulatorTransform:
    """A regulator as a gradient transform of a training step (``vlpt.methods.step``): ``R(g)`` per tensor."""

    def __init__(self, regulator: GradientRegulator):
        self.regulator = regulator

    def __call__(self, grads: Grads, step: TrainingStep) -> Grads:
        with torch.no_grad():  # follows the method across devices
            return {name: self.regulator.to(g.device).regulate(name, g) for name, g in grads.items()}


def attach_regulator(method, regulator: GradientRegulator):
    """Regulate the gradients of ``method``'s prompt tensors in its training steps (GRAM's downstream use).

    Attaches the regulator as a gradient transform that runs after the method's own; returns its
    handle (``handle.remove()`` detaches). A prompt tensor the regulator does not know raises
    CheckpointError.
    """
    unknown = sorted(set(named_trainable_parameters(method)) - set(regulator.shapes))
    if unknown:
        raise CheckpointError(
            f"gradient regulator has no entry for {unknown}; it was learned for {sorted(regulator.shapes)}"
        )
    return method.attach_gradient_transform(RegulatorTransform(regulator))


def _backbone_from(spec):
    from vlpt.backbone import ClipBackbone

    return spec if isinstance(spec, ClipBackbone) else ClipBackbone.from_name(str(spec))


def run_gram(
    method_name: str,
    backbone="vlpt-starter-vit@vlpt-starter",
    out_path: str | Path = "gram_init.pt",
    caption_source: str | Mapping[str, str | Sequence[str]] | Sequence[str] = "starter",
    steps: int = 300,
    *,
    params: Mapping | None = None,
    data_root: str | Path | None = None,
    cache_dir: str | Path | None = None,
    augment: str = "none",
    device: str = "cpu",
    **gram_kwargs,
) -> GramResult:
    """``vlpt gram``: meta-learn an initialization for a method config and write it to ``out_path``.

    ``method_name`` is a method config as ``vlpt.factory.create_method`` takes it (a shipped config such as
    ``coop`` or ``coop_m4``, a registered method, or a ``.yaml`` path) with ``params`` overrides; ``backbone``
    a ClipBackbone or ``MODEL@PRETRAINED``.
    ``caption_source``: ``"starter"`` (captioned starter images generated under
    ``<data_root>/gram_starter_captions``), a mapping ``{domain: folder | shard(s) | glob}``, or
    command-line ``NAME=PATH[,PATH...]`` strings. ``augment`` picks the image transform
    (``none`` = evaluation preprocessing, or ``crop_flip`` / ``crop`` / ``flip``). Other keyword
    arguments go to ``meta_learn_initialization`` (``inner_lr``, ``outer_lr``, ``batch_size``,
    ``inner_steps``, ``seed``, ``tasks_per_step``, ``first_order``, ``objective``, ...). Train with the
    result by setting the method's ``init_from`` to ``out_path``.
    """
    from vlpt.data.transforms import train_transform
    from vlpt.factory import resolve_method
    from vlpt.meta.captions import load_caption_domains, parse_domain_specs, starter_caption_pairs
    from vlpt.paths import default_data_root

    resolved = resolve_method(method_name, dict(params or {}), "vlpt gram")
    clip = _backbone_from(backbone)
    if isinstance(caption_source, str) and caption_source == "starter":
        root = Path(data_root) if data_root is not None else default_data_root()
        domains = starter_caption_pairs(root / "gram_starter_captions")
    elif isinstance(caption_source, Mapping):
        domains = load_caption_domains(caption_source, cache_dir)
    else:
        specs = [caption_source] if isinstance(caption_source, str) else list(caption_source)
        domains = load_caption_domains(parse_domain_specs(specs), cache_dir)
    with torch.random.fork_rng(devices=[]):  # the starting prompt is drawn from the run's seed, not the caller's RNG
        torch.manual_seed(gram_kwargs.get("seed", 0))
        method = resolved.cls(clip, ["object"], ["{}"], resolved.config).to(device)
    transform = train_transform(clip.image_size, clip.preprocess_cfg["mean"], clip.preprocess_cfg["std"], augment)
    notes = {"method_config": {"name": str(method_name), "params": dataclasses.asdict(resolved.config)},
             "caption_source": caption_source if isinstance(caption_source, str) else "custom", "augment": augment}
    return meta_learn_initialization(method, domains, steps=steps, transform=transform, out_path=out_path,
                                     notes=notes, **gram_kwargs)
