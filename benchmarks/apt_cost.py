"""What APT promises against VPT-deep at the same prompt count: compute (FLOPs and time per training step) here,
accuracy from the starter suite's records.

Settings: VPT-deep (prompt tokens join every layer's sequence), APT's exact decomposition (``apt`` with ``form:
exact``: the same features as VPT-deep without running the prompt tokens through the blocks) and APT itself
(``form: approximated``, the default), each at the same prompt count per layer in every layer of the image tower,
plus the unprompted tower for the extra FLOPs. FLOPs are counted by ``torch.utils.flop_counter`` (matrix
products and attention; a multiply-add counts 2): the forward pass of one batch (the "additional FLOPs" the
paper reports are the forward's over the unprompted tower) and one training step (forward and backward).
Training steps (SGD on the prompts, random images and labels) are timed interleaved, each setting in fresh
processes. Random weights are enough for cost figures.

    python benchmarks/apt_cost.py                                       # ViT-B-16 shapes, 8 and 50 tokens
    python benchmarks/apt_cost.py --model vlpt-starter-vit --tokens 8

Results are merged into ``benchmarks/results/apt_cost.json`` and rendered, with the starter suite's accuracy of
``vpt`` and ``apt`` (``leaderboard/records``), to ``benchmarks/results/apt_cost.md``.
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

from isolated import run_isolated
from stored_results import merge_results

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
SETTINGS = {"unprompted tower": ("zeroshot", {}), "vpt-deep": ("vpt", {}),
            "apt exact (decomposition)": ("apt", {"form": "exact"}),
            "apt (approximated)": ("apt", {"form": "approximated"})}


def measure(setting: str, model: str, tokens: int, classes: int, batch: int, steps: int, device: str) -> dict:
    import torch
    import torch.nn.functional as F
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode

    from vlpt.backbone import ClipBackbone
    from vlpt.factory import create_method

    torch.manual_seed(0)
    backbone = ClipBackbone(model, None).to(device)
    config, params = SETTINGS[setting]
    if config != "zeroshot":
        params = {**params, "n_tokens": tokens}
    method = create_method(config, backbone, [f"class {i}" for i in range(classes)], ["a photo of a {}."],
                           **params).to(device)
    size = backbone.image_size
    images = torch.randn(batch, 3, size, size, device=device)
    labels = torch.randint(0, classes, (batch,), device=device)
    # counted on the math path of attention: FlopCounterMode misses the fused CPU kernels (nn.MultiheadAttention's
    # inference fast path, scaled_dot_product_attention's flash kernel)
    backbone.model.train()
    with torch.no_grad(), sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
        method.logits(images)
    backbone.model.eval()
    forward_flops = counter.get_total_flops()
    trainable = method.trainable_parameters()
    result = {"setting": setting, "model": model, "tokens": tokens, "classes": classes, "batch": batch,
              "device": torch.cuda.get_device_name() if device.startswith("cuda") else
              f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)",
              "trainable_parameters": sum(p.numel() for p in trainable),
              "forward_gflops_per_image": round(forward_flops / batch / 1e9, 4), "torch": torch.__version__}
    if not trainable:
        return {**result, "step_gflops_per_image": None, "ms_per_step_median": None}
    optimizer = torch.optim.SGD(trainable, lr=0.0025)

    def step():
        loss = F.cross_entropy(method.logits(images), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
        step()  # also the warm-up
    seconds = []
    for _ in range(steps):
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        started = time.perf_counter()
        step()
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        seconds.append(time.perf_counter() - started)
    return {**result, "step_gflops_per_image": round(counter.get_total_flops() / batch / 1e9, 4),
            "ms_per_step_median": round(1000 * statistics.median(seconds), 1), "steps": steps}


def starter_accuracy() -> list[str]:
    """Rows of the starter suite's few-shot accuracy of vpt and apt (mean and spread over seeds)."""
    from vlpt.results import RecordStore

    groups: dict[tuple, list[float]] = {}
    for record in RecordStore(ROOT / "leaderboard" / "records").records():
        i = record.identity
        params = record.config["method"]["params"]
        started_elsewhere = params.get("init_from") or record.config.get("init_from_run")  # GRAM, ConES classifier
        if i.method in ("vpt", "apt") and i.protocol == "few_shot" and not started_elsewhere:
            key = (i.dataset, i.shots, i.method, i.variant, params["n_tokens"], params.get("form", "–"))
            groups.setdefault(key, []).append(record.metrics["test"]["accuracy"])
    rows = []
    for (dataset, shots, method, variant, tokens, form), values in sorted(groups.items()):
        spread = statistics.stdev(values) if len(values) > 1 else 0.0
        rows.append(f"| {dataset} | {shots} | {method} · {variant} | {form} | {tokens} | "
                    f"{statistics.mean(values):.1f} ± {spread:.1f} | {len(values)} |")
    return rows


def render(entries: list[dict]) -> str:
    lines = ["# APT against VPT-deep at the same prompt count", "",
             "Generated by `benchmarks/apt_cost.py`. Compute: random weights, prompts in every layer of the image "
             "tower; GFLOPs per image counted by `torch.utils.flop_counter` (a multiply-add is 2); extra: the "
             "forward's over the unprompted tower; ms / step: median training step (SGD on the prompts) over "
             "fresh processes, interleaved.", "",
             "| Device | Backbone | Batch | Tokens / layer | Setting | Trainable parameters | Forward GFLOPs | "
             "Extra forward GFLOPs | Step GFLOPs | ms / step | x VPT-deep |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    plain = {(e["device"], e["model"], e["batch"]): e for e in entries if e["setting"] == "unprompted tower"}
    vpt = {(e["device"], e["model"], e["batch"], e["tokens"]): e for e in entries if e["setting"] == "vpt-deep"}
    for e in entries:
        if e["setting"] == "unprompted tower":
            continue
        base = plain.get((e["device"], e["model"], e["batch"]))
        extra = f"{e['forward_gflops_per_image'] - base['forward_gflops_per_image']:.3f}" if base else "–"
        ref = vpt.get((e["device"], e["model"], e["batch"], e["tokens"]))
        ratio = f"{e['ms_per_step_median'] / ref['ms_per_step_median']:.2f}" if ref else "–"
        lines.append(f"| {e['device']} | {e['model']} | {e['batch']} | {e['tokens']} | {e['setting']} | "
                     f"{e['trainable_parameters']} | {e['forward_gflops_per_image']:.3f} | {extra} | "
                     f"{e['step_gflops_per_image']:.3f} | {e['ms_per_step_median']:.1f} | {ratio} |")
    for e in plain.values():
        lines.append(f"| {e['device']} | {e['model']} | {e['batch']} | – | unprompted tower | 0 | "
                     f"{e['forward_gflops_per_image']:.3f} | 0 | – | – | – |")
    lines += ["", "Accuracy (starter suite, few-shot, `leaderboard/records`; mean ± std over seeds):", "",
              "| Dataset | Shots | Method | Form | Tokens / layer | Accuracy | Seeds |", "|---|---|---|---|---|---|---|",
              *starter_accuracy()]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="ViT-B-16")
    parser.add_argument("--tokens", type=int, nargs="+", default=[8, 50])
    parser.add_argument("--classes", type=int, default=100)
    parser.add_argument("--batch", type=int, default=4, help="VPT's and APT's batch size")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=2, help="fresh processes per setting, interleaved")
    parser.add_argument("--device", default=None)
    parser.add_argument("--render-only", action="store_true", help="rewrite the .md from the .json and records")
    args = parser.parse_args()

    import torch

    from vlpt.results import atomic_write_text

    path = RESULTS / "apt_cost.json"
    entries = json.loads(path.read_text()) if path.is_file() else []  # --render-only: as they are
    if not args.render_only:
        device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
        cases = [(setting, tokens) for tokens in args.tokens for setting in SETTINGS
                 if setting != "unprompted tower" or tokens == args.tokens[0]]
        runs: dict[tuple, list[dict]] = {case: [] for case in cases}
        for _ in range(args.rounds):
            for setting, tokens in cases:
                runs[setting, tokens].append(run_isolated(
                    measure, setting=setting, model=args.model, tokens=tokens, classes=args.classes,
                    batch=args.batch, steps=args.steps, device=device))
        new = []
        for found in runs.values():
            times = [e["ms_per_step_median"] for e in found if e["ms_per_step_median"] is not None]
            new.append({**found[0], "ms_per_step_median": statistics.median(times) if times else None,
                        "rounds": len(found)})
            print(json.dumps(new[-1]))
        entries = merge_results(path, new, lambda e: (e["device"], e["model"], e["batch"], e["tokens"], e["setting"]))
    atomic_write_text(RESULTS / "apt_cost.md", render(entries))


if __name__ == "__main__":
    main()
