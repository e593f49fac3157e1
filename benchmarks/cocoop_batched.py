"""CoCoOp training throughput and memory: several images' prompts per text-tower pass vs one image at a time.

CoCoOp (Zhou et al., CVPR 2022) gives each image its own class prompts, so the reference code trains
with batch size 1 and loops over images. vlpt encodes the prompts of several images in one text-tower
pass; how many follows from a memory budget, ``chunk_memory_mb`` (``vlpt/methods/cocoop.py``; a training
batch that needs several passes recomputes each in the backward pass; the gradients equal the loop's, see
``tests/test_cocoop_chunking.py``). This script times training steps on random images at a given batch
size: once as the paper's per-image loop (forward and backward one image at a time, gradients accumulated
over the batch, one SGD step) and once per budget (the batch at once, one SGD step). It records for each
setting the images per text pass the budget gave, the passes per step, images per second, the speed-up
over the loop and the peak memory of the timed steps. Each setting runs in a fresh process, so its
peak-memory figure is its own: on CPU the increase of the process's peak resident memory over its level
before the timed steps (after an untimed warm-up step, freed memory is handed back with glibc's
``malloc_trim`` and the high-water mark is reset through ``/proc/self/clear_refs`` where Linux allows
it), on GPU the increase of the peak CUDA memory allocated. On CPU a second fresh process runs one step
with glibc's ``MALLOC_MMAP_THRESHOLD_`` set, so that its peak follows the live tensors alone (``peak_live_mb``).
Random weights are enough for cost figures, so any open_clip architecture can be measured offline.

    python benchmarks/cocoop_batched.py                        # starter backbone, 10 and 100 classes
    python benchmarks/cocoop_batched.py --model ViT-B-16 --classes 4 --budgets 2048 --steps 1

Results are merged into ``benchmarks/results/cocoop_batched.json`` (one entry per device, backbone,
class count, batch and setting) and rendered to ``benchmarks/results/cocoop_batched.md``.
"""
from __future__ import annotations

import argparse
import json
import math
import multiprocessing as mp
import os
import platform
import resource
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
LOOP = "per-image loop"
#: the speed-up over the per-image loop that the batched path is meant to reach at batch 32
TARGET_SPEEDUP = 5.0
NOTES = """\
## Reading these figures

All settings do the same arithmetic: every image's prompts for every class go through the text tower,
forward and backward, and the gradients are equal (`tests/test_cocoop_chunking.py`). Putting many
images in one pass removes only the cost *around* that arithmetic: one round of Python, operator
dispatch and kernel launches per pass instead of per image (the per-image loop also runs the image
tower one image at a time). A batch that needs more than one pass under its budget pays one extra
text-tower forward per step (each pass is recomputed in the backward pass, which is what keeps the
activations within the budget); a batch within one pass pays nothing extra.

Batching therefore pays where per-pass overhead dominates: a GPU, where one image's few prompts occupy a
small part of the device and a pass is bound by kernel launches, so a pass of many images costs little
more than a pass of one. A CPU has no such spare parallelism to fill: one image's prompts already keep
its cores busy with matrix products, so batching saves the overhead and nothing more, and very large
passes were slower per prompt here (likely because their activations stream through far more memory
than the caches hold). The 5x target at batch 32 is a GPU target; these CPU figures do not show whether a GPU meets it.

Memory: the per-image loop holds one image's activations at a time; a batch in one pass holds the
whole batch's; a budget keeps the text tower's activations near *est. MiB/pass* (vlpt's estimate,
`activation_bytes_per_prompt` in `vlpt/methods/cocoop.py`, checked against what autograd keeps in
`tests/test_cocoop_chunking.py`). *live MiB* also counts the image tower's temporaries and the
recomputation's working memory; *peak MiB* adds what glibc's allocator keeps after tensors are freed.
"""


def _status_mb(field: str) -> float | None:
    """A memory line of /proc/self/status (``VmRSS``, ``VmHWM``) in MiB, or None off Linux."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return None


def _reset_peak_rss() -> bool:
    """Reset the process's resident-memory high-water mark to its current level (Linux)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def _release_free_memory() -> None:
    """Hand memory freed by earlier steps back to the system (glibc), so the next peak is measured afresh."""
    import ctypes
    import gc

    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _peak_rss_mb() -> float:
    return _status_mb("VmHWM") or resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def measure(model: str, classes: int, batch: int, budget_mb: float | None, steps: int, device: str,
            threads: int | None = None, memory_only: bool = False) -> dict:
    """CoCoOp training steps on random images: the paper's per-image loop (``budget_mb`` None: forward and
    backward one image at a time, gradients accumulated over the batch) or the batch at once, its prompts
    in chunks from ``chunk_memory_mb = budget_mb``. ``memory_only``: one step, no warm-up, for the peak
    memory alone (run with ``MALLOC_MMAP_THRESHOLD_`` set, see ``run_isolated``)."""
    import torch

    from vlpt.backbone import ClipBackbone
    from vlpt.registry import METHODS

    torch.manual_seed(0)
    backbone = ClipBackbone(model, None).to(device)
    cls = METHODS.get("cocoop")
    names = [f"class {i}" for i in range(classes)]
    config = (cls.Config(images_per_chunk=1, batch_size=batch) if budget_mb is None
              else cls.Config(chunk_memory_mb=budget_mb, batch_size=batch))
    method = cls(backbone, names, ["a photo of a {}."], config).to(device)
    if threads:
        torch.set_num_threads(threads)
    optimizer = torch.optim.SGD(method.trainable_parameters(), lr=0.002, momentum=0.9)
    size = backbone.image_size
    images = torch.randn(batch, 3, size, size, device=device)
    labels = torch.randint(0, classes, (batch,), device=device)
    cuda = device.startswith("cuda")
    per_pass = min(batch, method.images_per_chunk_for(classes, grad=True))
    per_image_mb = method.activation_bytes_per_image(classes, grad=True) / 2**20

    def step() -> None:
        optimizer.zero_grad()
        if budget_mb is None:  # the paper's loop: one image at a time, gradients accumulated over the batch
            for i in range(batch):
                (method.training_loss(images[i:i + 1], labels[i:i + 1]) / batch).backward()
        else:
            method.training_loss(images, labels).backward()
        optimizer.step()

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize()

    if memory_only:
        steps = 1
    else:
        step()  # warm-up: lazy initialisation and first allocations
        sync()
    # peak memory of the timed steps over the level with the backbone, method and batch loaded
    if cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated() / 2**20
    else:
        _release_free_memory()
        reset = _reset_peak_rss()
        before = _status_mb("VmRSS") if reset else _peak_rss_mb()
    started = time.perf_counter()
    for _ in range(steps):
        step()
    sync()
    seconds = (time.perf_counter() - started) / steps
    peak = (torch.cuda.max_memory_allocated() / 2**20 if cuda else _peak_rss_mb()) - before
    return {
        "model": model, "classes": classes, "batch": batch,
        "setting": LOOP if budget_mb is None else f"chunk_memory_mb={budget_mb:g}",
        "chunk_memory_mb": budget_mb, "images_per_pass": per_pass, "text_passes_per_step": math.ceil(batch / per_pass),
        "estimated_activations_per_pass_mb": round(per_pass * per_image_mb, 1),
        "device": _device_name(device), "steps": steps, "step_s": round(seconds, 3),
        "images_per_s": round(batch / seconds, 2),
        "peak_memory_mb": round(peak, 1),
        "peak_memory_kind": "cuda allocated increase" if cuda else "peak RSS increase",
        "load_average_1min": round(os.getloadavg()[0], 2),  # other processes compete for the same cores
        "torch": torch.__version__,
    }


def _device_name(device: str) -> str:
    import torch

    if device.startswith("cuda"):
        return torch.cuda.get_device_name(0)
    return f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def _child(queue, kwargs) -> None:
    queue.put(measure(**kwargs))


def run_isolated(live_memory: bool = False, **kwargs) -> dict:
    """``measure`` in a fresh process, so each peak-memory figure is its own. ``live_memory``: glibc then
    serves every allocation of 64 KiB or more by its own mapping, returned to the system when freed, so
    the resident memory follows the live tensors rather than what the allocator keeps (slower; memory only)."""
    context = mp.get_context("spawn")
    queue = context.Queue()
    process = context.Process(target=_child, args=(queue, {**kwargs, "memory_only": live_memory}))
    saved = os.environ.get("MALLOC_MMAP_THRESHOLD_")
    if live_memory:
        os.environ["MALLOC_MMAP_THRESHOLD_"] = str(64 * 1024)  # read by the child's C library at start
    try:
        process.start()
    finally:
        if saved is None:
            os.environ.pop("MALLOC_MMAP_THRESHOLD_", None)
        else:
            os.environ["MALLOC_MMAP_THRESHOLD_"] = saved
    result = queue.get()
    process.join()
    return result


def _key(entry: dict) -> tuple:
    return entry["device"], entry["model"], entry["classes"], entry["batch"], entry["setting"]


def render(entries: list[dict]) -> str:
    """The results as a Markdown table, with the speed-up over the loop and the 5x check per backbone."""
    lines = ["# CoCoOp: prompts of several images per text-tower pass vs the per-image loop", "",
             "Training steps (forward, backward, SGD step) on random images, random weights; generated by "
             "`python benchmarks/cocoop_batched.py`. *images/pass* is what `chunk_memory_mb` gave "
             "(`CoCoOp.images_per_chunk_for`); *est. MiB/pass* is vlpt's estimate of the text tower's "
             "activations per pass; *peak MiB* is the timed steps' peak memory over the level before them "
             "(CPU: resident memory, allocator's retention included), *live MiB* the same with large "
             "allocations returned to the system when freed (CPU: the live tensors), each in a fresh process.", "",
             "| device | backbone | classes | batch | setting | images/pass | passes/step | est. MiB/pass | "
             "step (s) | img/s | speed-up | peak MiB | live MiB |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    keyed = {_key(e): e for e in entries}
    best: dict[tuple, float] = {}
    for key, entry in sorted(keyed.items(), key=lambda kv: (kv[0][:4], kv[0][4] != LOOP, -kv[1]["images_per_pass"])):
        loop = keyed.get((*key[:4], LOOP))
        speedup = entry["images_per_s"] / loop["images_per_s"] if loop else None
        if speedup and entry["setting"] != LOOP:
            group = (key[0], key[1], key[3])
            best[group] = max(best.get(group, 0.0), speedup)
        live = f"{entry['peak_live_mb']:.0f}" if "peak_live_mb" in entry else "-"
        lines.append(
            f"| {entry['device']} | {entry['model']} | {entry['classes']} | {entry['batch']} | {entry['setting']} | "
            f"{entry['images_per_pass']} | {entry['text_passes_per_step']} | "
            f"{entry['estimated_activations_per_pass_mb']:.0f} | {entry['step_s']:.2f} | {entry['images_per_s']:.1f} | "
            f"{'-' if speedup is None else f'{speedup:.2f}x'} | {entry['peak_memory_mb']:.0f} | {live} |")
    lines += ["", f"Best speed-up over the per-image loop (target: {TARGET_SPEEDUP:g}x at batch 32):", ""]
    for (device, model, batch), speedup in sorted(best.items()):
        verdict = "met" if speedup >= TARGET_SPEEDUP else "not met"
        lines.append(f"- {model}, batch {batch}, {device}: {speedup:.2f}x, target {verdict}")
    runs = sorted({(e["model"], e["classes"], e["steps"], e.get("load_average_1min")) for e in keyed.values()
                   if e["setting"] == LOOP})
    lines += ["", "Timed steps per setting, and the 1-minute load average when the loop was measured (the "
              "benchmark's own threads count in it; well above the thread count means other processes shared "
              "the cores; repeated runs of one setting on a quiet machine differed by up to about 15 %):", ""]
    lines += [f"- {model}, {classes} classes: {steps} step(s), load {load}" for model, classes, steps, load in runs]
    if any(steps == 1 for _, _, steps, _ in runs):
        lines += ["", "One timed step (after the untimed warm-up step) and few classes were used where a step takes "
                  "many seconds on this device, to keep that backbone's run to a few minutes. Each backbone runs at its "
                  "own image size (224 px for ViT-B-16, 32 px for the starter)."]
    return "\n".join(lines) + "\n\n" + NOTES


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="vlpt-starter-vit")
    parser.add_argument("--classes", type=int, nargs="+", default=[10, 100])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--budgets", type=float, nargs="+", default=[4096.0, 2048.0, 256.0],
                        help="chunk_memory_mb values to measure beside the per-image loop (MiB)")
    parser.add_argument("--steps", type=int, default=3, help="timed steps per setting (after one untimed step)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    args = parser.parse_args()
    path = RESULTS / "cocoop_batched.json"
    entries = [e for e in (json.loads(path.read_text()) if path.is_file() else []) if "setting" in e]
    for classes in args.classes:
        for budget in [None, *args.budgets]:
            kwargs = dict(model=args.model, classes=classes, batch=args.batch, budget_mb=budget,
                          steps=args.steps, device=args.device, threads=args.threads)
            entry = run_isolated(**kwargs)
            if not args.device.startswith("cuda"):  # CUDA's allocated figure already counts live tensors
                entry["peak_live_mb"] = run_isolated(live_memory=True, **kwargs)["peak_memory_mb"]
            print(json.dumps(entry), flush=True)
            entries = [e for e in entries if _key(e) != _key(entry)] + [entry]
    RESULTS.mkdir(exist_ok=True)
    entries.sort(key=_key)
    path.write_text(json.dumps(entries, indent=1) + "\n")
    (RESULTS / "cocoop_batched.md").write_text(render(entries))
    print((RESULTS / "cocoop_batched.md").read_text())


if __name__ == "__main__":
    main()
