"""One training step (one test image for TPT) as vlpt runs it, against the same step computed the way the
reference code computes it, interleaved in one process so machine noise hits both.

vlpt's step: the image tower's features come from the feature cache (CoOp, KgCoOp, CoCoOp; MaPLe prompts the
image tower, so it runs it) and the text tower runs on the sequence cut after the last end-of-text token
(``ClipBackbone.text_sequence_length``); TPT encodes its views once. The reference step: the image tower runs
on the batch every step, the text tower over the whole context (77 tokens), and TPT encodes its views at every
tuning step and the test image again to predict it (TPT's ``test_time_tuning``), in the reference's precision
(``--reference-precision``: fp16 on a GPU as CoOp's and TPT's code run CLIP; fp32 on a CPU, where fp16 is no
faster). Both sides build the same method with the same prompt and inputs, and the first (untimed) step's
loss, or TPT's prediction, must agree (``same_result``): only the way of computing differs. Each method uses its reference batch size (CoOp 32, KgCoOp 128, CoCoOp 1, MaPLe 4, TPT 64
views). Random weights: cost does not depend on them.

    python benchmarks/reference_step.py                          # ViT-B/16 shapes, 100 classes
    python benchmarks/reference_step.py --model vlpt-starter-vit --repeats 5

Writes ``benchmarks/results/reference_step.json`` (one entry per device and model) and ``reference_step.md``.
"""
from __future__ import annotations

import argparse
import copy
import json
import math
import platform
import statistics
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
#: (method config, reference batch size, speed-up the issue asks for on a 2-core CPU)
STEPS = [("coop", 32, 5.0), ("kgcoop", 128, 5.0), ("cocoop", 1, 3.0), ("maple", 4, None), ("tpt", 64, 3.0)]


def _sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _train_step(method, optimizer, inputs, labels) -> float:
    optimizer.zero_grad(set_to_none=True)
    loss = method.training_loss(inputs, labels)
    loss.backward()
    optimizer.step()
    return float(loss.detach())


def _tpt_vlpt(method, views) -> int:
    return int(method.adapt_and_predict(views).argmax())


def _tpt_reference(method, views) -> int:
    """TPT's ``test_time_tuning`` then inference: the views are encoded at every step and the image again."""
    import torch

    from vlpt.tta.selection import marginal_entropy

    backbone, scale = method.backbone, method.backbone.logit_scale.detach()
    method._episode.restore()
    optimizer = method._episode.optimizer
    chosen = None
    for _ in range(method.config.steps):
        with torch.no_grad():
            features = backbone.encode_image(views, normalize=True)
        logits = scale * features @ method.text_features().T
        if chosen is None:
            chosen = method.select_views(logits)
        loss = marginal_entropy(logits[chosen])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        prediction = int((scale * backbone.encode_image(views[:1], normalize=True) @ method.text_features().T).argmax())
    method._episode.restore()
    return prediction


def measure(model: str, classes: int, repeats: int, device: str, reference_precision: str, only: list[str]) -> dict:
    import torch

    from vlpt.backbone import ClipBackbone
    from vlpt.factory import create_method

    torch.manual_seed(0)
    backbone = ClipBackbone(model, None).to(device)
    # a second backbone with the same weights, running the whole text context (in the reference's precision)
    reference = copy.deepcopy(backbone) if reference_precision == "fp32" else \
        ClipBackbone(model, None, reference_precision).to(device)
    reference.load_state_dict(backbone.state_dict())
    reference.full_text_sequence = True
    assert not backbone.full_text_sequence
    names = [f"class number {i}" for i in range(classes)]
    size = backbone.image_size
    rows = []
    for name, batch, target in STEPS:
        if only and name not in only:
            continue
        sides = {}
        for side, tower in (("vlpt", backbone), ("reference", reference)):
            torch.manual_seed(0)  # the same prompt and inputs on both sides
            params = {"views": batch} if name == "tpt" else {}
            method = create_method(name, tower, names, ["a photo of a {}."], **params).to(device)
            images = torch.randn(batch, 3, size, size, device=device, dtype=tower.dtype)
            labels = torch.arange(batch, device=device) % classes
            if name == "tpt":
                method.start_episodes()
                run = (lambda m=method, v=images: _tpt_vlpt(m, v)) if side == "vlpt" else \
                    (lambda m=method, v=images: _tpt_reference(m, v))
            else:
                optimizer = torch.optim.SGD([p for p in method.parameters() if p.requires_grad], lr=1e-6)
                cached = side == "vlpt" and method.frozen_image_features
                with torch.no_grad():
                    inputs = tower.encode_image(images) if cached else images  # the feature cache's entries
                run = (lambda m=method, o=optimizer, x=inputs, y=labels: _train_step(m, o, x, y))
            sides[side] = run
        first = {side: run() for side, run in sides.items()}  # warm-up (first-call costs) outside the timing
        agrees = math.isclose(first["vlpt"], first["reference"], rel_tol=1e-3, abs_tol=1e-4)
        seconds = {side: [] for side in sides}
        for _ in range(repeats):
            for side, run in sides.items():  # interleaved
                _sync(device)
                started = time.perf_counter()
                run()
                _sync(device)
                seconds[side].append(time.perf_counter() - started)
        median = {side: statistics.median(values) for side, values in seconds.items()}
        ratio = median["reference"] / median["vlpt"]
        rows.append({"method": name, "batch": batch, "vlpt_s": round(median["vlpt"], 4),
                     "reference_s": round(median["reference"], 4), "ratio": round(ratio, 2), "same_result": agrees, "target": target,
                     "met": None if target is None else ratio >= target})
        print(json.dumps(rows[-1]), flush=True)
    return {"model": model, "classes": classes, "repeats": repeats, "reference_precision": reference_precision,
            "device": torch.cuda.get_device_name() if device.startswith("cuda") else
            f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)",
            "torch": torch.__version__, "steps": rows}


def render(entries: list[dict]) -> str:
    lines = ["# One step as vlpt runs it against the reference code's way", "",
             "Generated by `benchmarks/reference_step.py` (see its docstring for what each side computes); "
             "medians of interleaved repeats, random weights.", ""]
    for e in entries:
        lines += [f"## {e['model']}, {e['classes']} classes, {e['device']} (reference in {e['reference_precision']})",
                  "", "| Step | Batch | vlpt (s) | reference (s) | speed-up | target | met | same result |",
                  "|---|---|---|---|---|---|---|---|"]
        for r in e["steps"]:
            target = "–" if r["target"] is None else f">= {r['target']:g}x"
            met = "–" if r["met"] is None else ("yes" if r["met"] else "**no**")
            unit = "one image, its views" if r["method"] == "tpt" else "one training step"
            lines.append(f"| {r['method']} ({unit}) | {r['batch']} | {r['vlpt_s']:.3f} | {r['reference_s']:.3f} | "
                         f"{r['ratio']:.2f}x | {target} | {met} | {'yes' if r['same_result'] else '**no**'} |")
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="ViT-B-16")
    parser.add_argument("--classes", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    parser.add_argument("--reference-precision", default=None, help="fp32 or fp16 (default: fp16 on cuda, else fp32)")
    parser.add_argument("--only", nargs="*", default=[], help="measure only these steps (coop, kgcoop, ...)")
    args = parser.parse_args()

    import torch

    from vlpt.results import atomic_write_text

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    precision = args.reference_precision or ("fp16" if device.startswith("cuda") else "fp32")
    entry = measure(args.model, args.classes, args.repeats, device, precision, args.only)
    path = RESULTS / "reference_step.json"
    entries = json.loads(path.read_text()) if path.is_file() else []
    key = lambda e: (e["device"], e["model"], e["classes"])  # noqa: E731
    entries = sorted([e for e in entries if key(e) != key(entry)] + [entry], key=key)
    atomic_write_text(path, json.dumps(entries, indent=2) + "\n")
    atomic_write_text(RESULTS / "reference_step.md", render(entries))


if __name__ == "__main__":
    main()
