"""What each test-time method costs per test image, on the same images in one run.

Every test-time method vlpt ships (TPT, C-TPT, DiffTPT, Zero, TDA, DMN-ZS) and zero-shot CLIP as the baseline
adapt to the same random test images with their reference view counts, in stream order, each in a fresh process
so its peak-memory figure is its own: time per image (encoding its views and adapting, wall clock with a device
synchronisation; TDA and DMN-ZS update their memory as they go), the peak memory increase over the level before
the first image (CPU: peak resident memory; GPU: peak CUDA memory allocated), the views encoded per image and the
backward passes per image (counted calls of ``torch.autograd.backward``). DiffTPT's generated views are random
tensors here: their one-off generation by a diffusion pipeline is not included (see ``vlpt tta generate``). TDA
runs twice: as for a dataset outside ImageNet's natural shifts (the original view alone) and as for ImageNet-A (64
views, its multi-view path). Random weights are enough for cost figures, so any open_clip architecture can be measured
offline.

    python benchmarks/tta_cost.py                                  # the starter backbone, 10 classes
    python benchmarks/tta_cost.py --model ViT-B-16 --classes 200 --images 3

Results are merged into ``benchmarks/results/tta_cost.json`` (one entry per device, backbone, class count and
method) and rendered to ``benchmarks/results/tta_cost.md``.
"""
from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import time
from pathlib import Path

from isolated import run_isolated
from stored_results import merge_results

RESULTS = Path(__file__).resolve().parent / "results"
#: row name -> (method, its settings); the methods' reference defaults otherwise
METHODS = {
    "zeroshot": ("zeroshot", {}),
    "tpt": ("tpt", {}),
    "c_tpt": ("c_tpt", {}),
    "difftpt": ("difftpt", {}),
    "zero": ("zero", {}),
    "tda": ("tda", {}),
    "tda (64 views)": ("tda", {}),
    "dmn_zs": ("dmn_zs", {}),
}
#: the dataset each row's per-dataset settings are resolved for (TDA's multi-view path: a natural shift)
DATASETS = {"tda (64 views)": "imagenet_a"}


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def measure(row: str, model: str, pretrained: str | None, classes: int, images: int, warmup: int, device: str,
            threads: int | None) -> dict:
    """Run one method over ``warmup + images`` random test images; its cost figures."""
    import torch

    from vlpt.backbone import ClipBackbone
    from vlpt.factory import create_method

    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(0)
    backbone = ClipBackbone(model, pretrained).to(device)
    names = [f"class {i}" for i in range(classes)]
    config, params = METHODS[row]
    method = create_method(config, backbone, names, ["a photo of a {}."], **params).to(device)
    dataset = DATASETS.get(row)
    cfg = method.config
    adapts = method.adapts_at_test_time
    if adapts and hasattr(method, "prepare_dataset"):
        method.prepare_dataset(dataset)
    views = method.view_count(dataset) if hasattr(method, "view_count") else getattr(cfg, "views", 1)
    generated = getattr(cfg, "generated_views", 0)
    size = backbone.image_size
    generator = torch.Generator().manual_seed(1)
    inputs = [(torch.randn(views, 3, size, size, generator=generator).to(device),
               torch.randn(generated, 3, size, size, generator=generator).to(device) if generated else None)
              for _ in range(warmup + images)]
    backward_calls = [0]
    original_backward = torch.autograd.backward

    def counting_backward(*args, **kwargs):
        backward_calls[0] += 1
        return original_backward(*args, **kwargs)

    torch.autograd.backward = counting_backward

    def one_image(image_views, extra):
        if not adapts:
            with torch.no_grad():
                return method.logits(image_views[:1])[0]
        features, extra_features = method.encode_views(image_views, extra)
        with torch.enable_grad():
            return method.adapt_batch([features], [extra_features])[0]

    if device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    # backbone, method and inputs loaded; nothing adapted yet
    baseline = torch.cuda.memory_allocated() / 2**20 if device.startswith("cuda") else _rss_mb()
    if adapts:
        method.start_episodes()
    for image_views, extra in inputs[:warmup]:
        one_image(image_views, extra)
    backward_calls[0] = 0
    seconds = []
    for image_views, extra in inputs[warmup:]:
        started = time.perf_counter()
        int(one_image(image_views, extra).argmax())  # synchronises with the device
        seconds.append(time.perf_counter() - started)
    peak = (torch.cuda.max_memory_allocated() / 2**20 if device.startswith("cuda") else _rss_mb()) - baseline
    return {
        "method": row, "model": model, "pretrained": pretrained, "classes": classes, "images": images,
        "device": torch.cuda.get_device_name() if device.startswith("cuda") else
        f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)",
        "views_per_image": (views if adapts else 1) + generated,
        "backward_per_image": backward_calls[0] / images,
        "ms_per_image_median": round(1000 * statistics.median(seconds), 2),
        "ms_per_image_mean": round(1000 * statistics.fmean(seconds), 2),
        "peak_memory_mb": round(peak, 1),
        "peak_memory_kind": "cuda allocated increase" if device.startswith("cuda") else "peak RSS increase",
        "torch": torch.__version__,
    }


def render(entries: list[dict]) -> str:
    lines = ["# Test-time methods: cost per test image", "",
             "Generated by `benchmarks/tta_cost.py`: every method on the same random test images, each in a fresh "
             "process; random weights (cost does not depend on them). Views: images encoded per test image (DiffTPT: "
             "65 augmented + 63 generated, whose generation is not timed). Backward: backward passes per test image. "
             "x zero-shot: time per image over zero-shot CLIP's in the same run and setting.", "",
             "| Device | Backbone | Classes | Method | Views | Backward | ms / image (median) | x zero-shot | "
             "Peak memory (MB) |",
             "|---|---|---|---|---|---|---|---|---|"]
    baselines = {(e["device"], e["model"], e["classes"]): e["ms_per_image_median"]
                 for e in entries if e["method"] == "zeroshot"}
    for e in entries:
        base = baselines.get((e["device"], e["model"], e["classes"]))
        ratio = f"{e['ms_per_image_median'] / base:.1f}" if base else "–"
        lines.append(f"| {e['device']} | {e['model']} | {e['classes']} | {e['method']} | {e['views_per_image']} | "
                     f"{e['backward_per_image']:g} | {e['ms_per_image_median']:.1f} | {ratio} | "
                     f"{e['peak_memory_mb']:.1f} ({e['peak_memory_kind']}) |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="vlpt-starter-vit")
    parser.add_argument("--pretrained", default=None)
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    parser.add_argument("--images", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    args = parser.parse_args()

    import torch

    from vlpt.results import atomic_write_text

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    new = []
    for row in args.methods:
        new.append(run_isolated(measure, row=row, model=args.model, pretrained=args.pretrained, classes=args.classes,
                                images=args.images, warmup=args.warmup, device=device, threads=args.threads))
        print(json.dumps(new[-1]))
    order = list(METHODS)
    entries = merge_results(RESULTS / "tta_cost.json", new,
                            lambda e: (e["device"], e["model"], e["classes"], order.index(e["method"])))
    atomic_write_text(RESULTS / "tta_cost.md", render(entries))


if __name__ == "__main__":
    main()
