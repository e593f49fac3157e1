"""Training-step cost of prompt methods against CoOp: decomposed prompts at CoOp's parameter budget, and ConES,
which trains without the text tower.

Shi & Lipani's claim for decomposed prompts is that a shorter prompt plus a low-rank update of the input
embeddings trains faster and with less memory at the same number of trainable parameters, because the sequence
the model runs is shorter; ConES's claim is that dropping the text encoder from the search speeds it up. This
script times training steps (forward, backward, optimizer step on random image features, the image tower being
frozen and its features stored, as vlpt trains all three) of CoOp with a 16-token context, of
``decomposed_prompt`` with 8 tokens and the rank that fits CoOp's budget, and of ``cones``, interleaved so
machine noise hits all, each in a fresh process for its own peak memory (CPU: the peak resident memory's
increase over the level before the first (warm-up) step; GPU: the peak CUDA memory allocated over the level
before it). Random weights are enough for cost figures. Accuracy is the leaderboard's (the starter suite's
few-shot rows of ``coop_m4``, ``decomposed_prompt`` and ``cones``).

    python benchmarks/prompt_step_cost.py                                # ViT-B-16 shapes, 100 classes
    python benchmarks/prompt_step_cost.py --model vlpt-starter-vit --classes 10

Results are merged into ``benchmarks/results/prompt_step_cost.json`` and rendered to
``benchmarks/results/prompt_step_cost.md``.
"""
from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import platform
import resource
import statistics
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
SETTINGS = {"coop (16 tokens)": ("coop", {"n_ctx": 16}),
            "decomposed_prompt (8 tokens + low-rank update)": ("decomposed_prompt", {"n_ctx": 8}),
            "cones (class concepts, no text tower)": ("cones", {})}


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def measure(setting: str, model: str, classes: int, batch: int, steps: int, device: str) -> dict:
    import torch
    import torch.nn.functional as F

    from vlpt.backbone import ClipBackbone
    from vlpt.factory import create_method

    torch.manual_seed(0)
    backbone = ClipBackbone(model, None).to(device)
    config, params = SETTINGS[setting]
    method = create_method(config, backbone, [f"class {i}" for i in range(classes)], ["a photo of a {}."],
                           **params).to(device)
    optimizer = method.build_optimizer(method.trainable_parameters())
    features = torch.randn(batch, backbone.embed_dim, device=device)
    labels = torch.randint(0, classes, (batch,), device=device)

    def step():
        loss = F.cross_entropy(method.logits(features), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return float(loss)

    if device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    baseline = torch.cuda.memory_allocated() / 2**20 if device.startswith("cuda") else _rss_mb()  # before any step
    step()  # warm-up (counted in the peak: it allocates what the timed steps reuse)
    seconds = []
    for _ in range(steps):
        started = time.perf_counter()
        step()
        seconds.append(time.perf_counter() - started)
    peak = (torch.cuda.max_memory_allocated() / 2**20 if device.startswith("cuda") else _rss_mb()) - baseline
    context = getattr(method, "context", None)  # ConES has no prompt: the text tower does not run
    length = backbone.text_sequence_length(context.eot_positions, backbone.context_length) if context else 0
    return {"setting": setting, "model": model, "classes": classes, "batch": batch, "steps": steps,
            "device": torch.cuda.get_device_name() if device.startswith("cuda") else
            f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)",
            "trainable_parameters": sum(p.numel() for p in method.trainable_parameters()),
            "text_sequence_length": length, "ms_per_step_median": round(1000 * statistics.median(seconds), 2),
            "peak_memory_mb": round(peak, 1), "torch": torch.__version__}


def _child(queue, kwargs):
    try:
        queue.put(measure(**kwargs))
    except Exception as error:  # the parent would wait for a result forever
        queue.put(error)
        raise


def run_isolated(**kwargs) -> dict:
    context = mp.get_context("spawn")
    queue = context.Queue()
    process = context.Process(target=_child, args=(queue, kwargs))
    process.start()
    result = queue.get()
    process.join()
    if isinstance(result, Exception):
        raise RuntimeError(f"measuring {kwargs['setting']} failed") from result
    return result


def render(entries: list[dict]) -> str:
    lines = ["# Training-step cost of prompt methods against CoOp", "",
             "Generated by `benchmarks/prompt_step_cost.py`: training steps on stored image features, random "
             "weights; medians over the rounds, each setting in fresh processes, interleaved. Text length: the "
             "sequence the text tower runs (cut after the last end-of-text token; 0: it does not run).", "",
             "| Device | Backbone | Classes | Batch | Setting | Trainable parameters | Text length | ms / step | "
             "x CoOp | Peak memory (MB) |", "|---|---|---|---|---|---|---|---|---|---|"]
    coop = {(e["device"], e["model"], e["classes"], e["batch"]): e for e in entries if e["setting"].startswith("coop ")}
    for e in entries:
        base = coop.get((e["device"], e["model"], e["classes"], e["batch"]))
        share = e["ms_per_step_median"] / base["ms_per_step_median"] if base else None
        ratio = "–" if share is None else f"{share:.2f}" if share >= 0.1 else f"{share:.1e}"
        lines.append(f"| {e['device']} | {e['model']} | {e['classes']} | {e['batch']} | {e['setting']} | "
                     f"{e['trainable_parameters']} | {e['text_sequence_length']} | {e['ms_per_step_median']:.1f} | "
                     f"{ratio} | {e['peak_memory_mb']:.1f} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="ViT-B-16")
    parser.add_argument("--classes", type=int, default=100)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=2, help="fresh processes per setting, interleaved")
    parser.add_argument("--device", default=None)
    args = parser.parse_args()

    import torch

    from vlpt.results import atomic_write_text

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    runs: dict[str, list[dict]] = {s: [] for s in SETTINGS}
    for _ in range(args.rounds):
        for setting in SETTINGS:
            runs[setting].append(run_isolated(setting=setting, model=args.model, classes=args.classes,
                                              batch=args.batch, steps=args.steps, device=device))
    path = RESULTS / "prompt_step_cost.json"
    entries = json.loads(path.read_text()) if path.is_file() else []
    key = lambda e: (e["device"], e["model"], e["classes"], e["batch"], e["setting"])  # noqa: E731
    for setting, found in runs.items():
        entry = {**found[0], "ms_per_step_median": statistics.median(e["ms_per_step_median"] for e in found),
                 "peak_memory_mb": max(e["peak_memory_mb"] for e in found), "rounds": len(found)}
        print(json.dumps(entry))
        entries = [e for e in entries if key(e) != key(entry)] + [entry]
    entries.sort(key=key)
    atomic_write_text(path, json.dumps(entries, indent=2) + "\n")
    atomic_write_text(RESULTS / "prompt_step_cost.md", render(entries))


if __name__ == "__main__":
    main()
