"""`vlpt pretrain`: train the project's small CLIP from scratch on the starter world.

The model is an open_clip ``CLIP`` (``vlpt-starter-vit``: 4-layer width-128 ViT with 4-px patches
on 32-px images, 4-layer width-128 text tower, the real CLIP tokenizer) trained with open_clip's
``ClipLoss`` on captioned images a fresh machine can make: scikit-learn's 8x8 digits (the held-out
fifth excluded) and coloured shapes (the ``HELD_OUT_SHAPES`` classes excluded). Rendered digits are
never shown. Training is deterministic for a given seed, step count and machine.
"""
from __future__ import annotations

import json
import math
import time
from pathlib import Path

import numpy as np
import open_clip
import torch
import torch.nn.functional as F
from open_clip.loss import ClipLoss
from safetensors.torch import save_file

from vlpt.backbone.clip import MODEL_CONFIG_DIR  # noqa: F401  (registers vlpt's model configs)
from vlpt.starter import synthetic

MODEL_NAME = "vlpt-starter-vit"
DIGIT_CAPTIONS = ["a photo of the number {}.", "the digit {}.", "a handwritten {}.", "a drawing of the number {}.", "{}"]
SHAPE_CAPTIONS = ["a photo of a {}.", "a {}.", "a drawing of a {}.", "a picture of a {} shape.", "{}"]
PRETRAIN_SHAPES_PER_CLASS = 220
SHAPES_PRETRAIN_SEED = 1000


def is_pretraining_digit(index: int) -> bool:
    """Every fifth scikit-learn digit is held out of pretraining (it is the starter digits' test set)."""
    return index % 5 != 0


def _to_tensor(images) -> torch.Tensor:
    return torch.from_numpy(np.stack([np.asarray(im, dtype=np.uint8) for im in images])).permute(0, 3, 1, 2)


def build_pretraining_set() -> tuple[torch.Tensor, list[list[str]]]:
    """uint8 images ``[N, 3, 32, 32]`` and, per image, the captions it may be paired with."""
    _, labels = synthetic.load_digits8()
    digit_items = list(synthetic.digits8(np.array([i for i in range(len(labels)) if is_pretraining_digit(i)])))
    seen = [c for c in synthetic.SHAPE_CLASSES if c not in synthetic.HELD_OUT_SHAPES]
    shape_items = list(synthetic.shapes(PRETRAIN_SHAPES_PER_CLASS, SHAPES_PRETRAIN_SEED, seen))
    images = _to_tensor([x.image for x in digit_items + shape_items])
    captions = [[t.format(x.classname) for t in DIGIT_CAPTIONS] for x in digit_items]
    captions += [[t.format(x.classname) for t in SHAPE_CAPTIONS] for x in shape_items]
    return images, captions


def normalize(images: torch.Tensor, model) -> torch.Tensor:
    """uint8 images to the model's normalized float input."""
    cfg = model.visual.preprocess_cfg
    mean = torch.tensor(cfg["mean"]).view(1, 3, 1, 1)
    std = torch.tensor(cfg["std"]).view(1, 3, 1, 1)
    return (images.float() / 255.0 - mean) / std


def random_shift(images: torch.Tensor, generator: torch.Generator, pad: int = 2) -> torch.Tensor:
    """Translate each image by up to ``pad`` pixels (reflect padding), a light augmentation."""
    padded = F.pad(images.float(), [pad] * 4, mode="reflect")
    size = images.shape[-1]
    offsets = torch.randint(0, 2 * pad + 1, (images.shape[0], 2), generator=generator)
    return torch.stack([p[:, y:y + size, x:x + size] for p, (y, x) in zip(padded, offsets.tolist())])


def zero_shot_accuracy(model, tokenizer, images: torch.Tensor, labels: list[int], classnames: list[str], template: str) -> float:
    """Top-1 accuracy (percent) of single-template zero-shot classification."""
    with torch.no_grad():
        text = F.normalize(model.encode_text(tokenizer([template.format(c) for c in classnames])), dim=-1)
        feats = torch.cat([F.normalize(model.encode_image(normalize(chunk, model)), dim=-1) for chunk in images.split(512)])
        predictions = (feats @ text.T).argmax(dim=-1)
    return 100.0 * (predictions == torch.tensor(labels)).float().mean().item()


def held_out_report(model, tokenizer) -> dict[str, float]:
    """Zero-shot accuracy on the held-out starter sets (none of them was shown in pretraining)."""
    images8, labels8 = synthetic.load_digits8()
    test_idx = [i for i in range(len(labels8)) if not is_pretraining_digit(i)]
    digits = list(synthetic.digits8(np.array(test_idx)))
    shapes_all = list(synthetic.shapes(20, seed=7))
    unseen = [x for x in shapes_all if x.classname in synthetic.HELD_OUT_SHAPES]
    rendered = list(synthetic.rendered_digits(30, seed=7))
    names = synthetic.SHAPE_CLASSES
    sets = {
        "digits8_heldout": (digits, synthetic.DIGIT_NAMES, DIGIT_CAPTIONS[0]),
        "shapes_all24": (shapes_all, names, SHAPE_CAPTIONS[0]),
        "shapes_unseen6_among24": (unseen, names, SHAPE_CAPTIONS[0]),
        "rendered_digits": (rendered, synthetic.DIGIT_NAMES, DIGIT_CAPTIONS[0]),
    }
    return {
        key: round(zero_shot_accuracy(model, tokenizer, _to_tensor([x.image for x in items]),
                                      [classes.index(x.classname) for x in items], classes, template), 2)
        for key, (items, classes, template) in sets.items()
    }


def pretrain_starter(out: Path, steps: int = 600, batch_size: int = 256, lr: float = 1e-3,
                     warmup: int = 50, seed: int = 0, log_every: int = 50) -> dict:
    """Train the starter CLIP and write fp16 safetensors weights plus a JSON card beside them."""
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    model = open_clip.create_model(MODEL_NAME, pretrained=None)
    tokenizer = open_clip.get_tokenizer(MODEL_NAME)
    images, captions = build_pretraining_set()
    loss_fn = ClipLoss()
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "embedding" not in n]
    no_decay = [p for n, p in model.named_parameters() if not (p.ndim >= 2 and "embedding" not in n)]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}], lr=lr)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: (s + 1) / warmup if s < warmup else 0.5 * (1 + math.cos(math.pi * (s - warmup) / max(1, steps - warmup)))
    )
    started = time.time()
    model.train()
    for step in range(steps):
        batch = torch.randperm(len(images), generator=generator)[:batch_size]
        choice = torch.randint(0, 1000, (batch_size,), generator=generator).tolist()
        texts = [captions[i][c % len(captions[i])] for i, c in zip(batch.tolist(), choice)]
        x = normalize(random_shift(images[batch], generator), model)
        image_features, text_features, logit_scale = model(x, tokenizer(texts))
        loss = loss_fn(image_features, text_features, logit_scale)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, math.log(100))
        if step % log_every == 0 or step == steps - 1:
            print(f"step {step:4d}/{steps}  loss {loss.item():.4f}  {time.time() - started:.0f}s", flush=True)
    model.eval()
    state = {k: v.detach().to(torch.float16).contiguous() for k, v in model.state_dict().items()}
    out.parent.mkdir(parents=True, exist_ok=True)
    save_file(state, str(out), metadata={"quick_gelu": "false"})  # open_clip's GELU; loaders read the activation
    model.load_state_dict({k: v.float() for k, v in state.items()})
    card = {
        "model": MODEL_NAME,
        "command": f"vlpt pretrain --steps {steps} --batch-size {batch_size} --lr {lr} --seed {seed} --out {out.name}",
        "steps": steps, "batch_size": batch_size, "lr": lr, "warmup": warmup, "seed": seed,
        "training_images": len(images), "final_loss": round(loss.item(), 4),
        "train_seconds": round(time.time() - started, 1), "torch": torch.__version__,
        "zero_shot_heldout": held_out_report(model, tokenizer),
    }
    out.with_suffix(".json").write_text(json.dumps(card, indent=2) + "\n")
    return card
