"""What bf16 autocast changes: accuracy and time of the same runs in fp32 and in ``bf16-mixed``.

``trainer.precision: bf16-mixed`` runs training under Lightning's autocast, and evaluation and stored features
under the same autocast (``vlpt.backbone.precision``). This script runs two suites twice, once per precision,
each in its own ``vlpt bench`` process with its own output and feature cache, and compares every leaderboard
row (method, variant, evaluation set: mean over seeds):

* ``starter``: the starter suite's few-shot experiment (rendered digits, all seven methods, 3 seeds) and its
  test-time experiment without TPT+CoOp and DiffTPT (zero-shot and TPT, 3 seeds, 200 images per set);
* ``segmentation``: the starter suite's segmentation experiment with CoOp and VPT prompts, seed 1 (Dice);
* ``shared``: 16-shot CIFAR-10 from ``../shared/data`` (real images, 2,000 test images) with zero-shot, the
  linear probe, CoOp (M=4) and VPT, 3 seeds, on the same starter backbone.

    python benchmarks/mixed_precision.py          # about 11 minutes on 2 CPU cores

Results: ``benchmarks/results/mixed_precision.{json,md}``: the accuracy bf16 costs, and each process's wall
time (on a CPU it depends on bf16 support: faster for the starter's small towers on this machine's AVX-512
BF16 cores, slower for its segmentation decoder). On a GPU the same script gives GPU figures.
"""
from __future__ import annotations

import json
import platform
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
SHARED_DATA = ROOT.parent / "shared" / "data"
PRECISIONS = ("32-true", "bf16-mixed")


def starter_suite() -> dict:
    starter = yaml.safe_load((ROOT / "vlpt" / "configs" / "suites" / "starter.yaml").read_text())
    few_shot = starter["experiments"][0]
    test_time = next(e for e in starter["experiments"] if e["protocol"] == "test_time")
    test_time = {**test_time, "methods": [m for m in test_time["methods"]
                                          if not (isinstance(m, dict) and ("init_from" in m or m["config"] == "difftpt"))]}
    return {"name": "mixed-precision-starter", "backbone": starter["backbone"], "experiments": [few_shot, test_time]}


def segmentation_suite() -> dict:
    starter = yaml.safe_load((ROOT / "vlpt" / "configs" / "suites" / "starter.yaml").read_text())
    segmentation = next(e for e in starter["experiments"] if e["protocol"] == "segmentation")
    return {"name": "mixed-precision-segmentation", "backbone": starter["backbone"],
            "experiments": [{**segmentation, "seeds": [1], "methods": ["seg_coop", "seg_vpt"]}]}


def shared_suite() -> dict:
    return {"name": "mixed-precision-shared", "backbone": {"model": "vlpt-starter-vit", "pretrained": "vlpt-starter"},
            "experiments": [{"protocol": "few_shot", "dataset": "cifar10", "shots": [16], "seeds": [1, 2, 3],
                             "train_augment": "flip", "eval_limit": 2000, "params": {"epochs": 20},
                             "methods": ["zeroshot", "linear_probe", "coop_m4", {"config": "vpt",
                                                                                 "params": {"epochs": 5}}]}]}


def run(suite: dict, precision: str, folder: Path, data_root: Path | None) -> tuple[list[dict], float]:
    """The records of ``suite`` run at ``precision`` in a fresh ``vlpt bench`` process, and its wall seconds."""
    folder.mkdir(parents=True)
    path = folder / "suite.yaml"
    path.write_text(yaml.safe_dump({**suite, "trainer": {"accelerator": "auto", "precision": precision},
                                    "feature_cache": {"folder": str(folder / "cache")}}))
    command = [sys.executable, "-m", "vlpt.cli", "bench", "--suite", str(path), "--output", str(folder / "out")]
    if data_root is not None:
        command += ["--data-root", str(data_root)]
    started = time.perf_counter()
    subprocess.run(command, check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
    seconds = time.perf_counter() - started
    return [json.loads(p.read_text()) for p in sorted((folder / "out" / "records").glob("*.json"))], seconds


def rows(records: list[dict]) -> dict[str, float]:
    """Mean over seeds of every (method/variant, evaluation set) accuracy (Dice for segmentation)."""
    values = defaultdict(list)
    for record in records:
        identity = record["identity"]
        for eval_set, metrics in record["metrics"].items():
            metric = "dice" if "dice" in metrics else "accuracy"
            values[f"{identity['method']}/{identity['variant']} on {eval_set} ({metric})"].append(metrics[metric])
    return {name: sum(v) / len(v) for name, v in sorted(values.items())}


def main() -> None:
    parts = {"starter": (starter_suite(), None), "segmentation": (segmentation_suite(), None)}
    if SHARED_DATA.is_dir():
        parts["shared"] = (shared_suite(), SHARED_DATA)
    else:
        print(f"{SHARED_DATA} is absent: the shared-data part is skipped")
    results = {"device": platform.processor() or platform.machine(), "parts": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for part, (suite, data_root) in parts.items():
            measured = {}
            for precision in PRECISIONS:
                records, seconds = run(suite, precision, Path(tmp) / part / precision, data_root)
                assert {r["config"]["trainer"]["precision"] for r in records} == {precision}
                measured[precision] = {"wall_s": round(seconds, 1), "rows": rows(records)}
                print(f"{part} {precision}: {len(records)} runs in {seconds:.0f} s", flush=True)
            full, mixed = (measured[p]["rows"] for p in PRECISIONS)
            diffs = {name: round(mixed[name] - full[name], 2) for name in full}
            results["parts"][part] = {**measured, "difference": diffs,
                                      "mean_abs_difference": round(sum(map(abs, diffs.values())) / len(diffs), 3),
                                      "max_abs_difference": max(map(abs, diffs.values())),
                                      "time_ratio": round(measured["bf16-mixed"]["wall_s"] / measured["32-true"]["wall_s"], 2)}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "mixed_precision.json").write_text(json.dumps(results, indent=2) + "\n")
    lines = ["# bf16 autocast against fp32", "",
             f"`python benchmarks/mixed_precision.py` on {results['device']} (CPU, 2 cores). Accuracy (Dice for "
             "segmentation) in percent, mean over the seeds; difference = bf16-mixed - fp32. Wall time of each `vlpt bench` process "
             "(start-up and feature caching included).", ""]
    for part, result in results["parts"].items():
        lines += [f"## {part}", "",
                  f"Wall time: fp32 {result['32-true']['wall_s']} s, bf16-mixed {result['bf16-mixed']['wall_s']} s "
                  f"(ratio {result['time_ratio']}). Mean |difference| {result['mean_abs_difference']} points, "
                  f"largest {result['max_abs_difference']}.", "",
                  "| run, evaluation set | fp32 | bf16-mixed | difference |", "|---|---:|---:|---:|"]
        for name, diff in result["difference"].items():
            lines.append(f"| {name} | {result['32-true']['rows'][name]:.2f} | {result['bf16-mixed']['rows'][name]:.2f} "
                         f"| {diff:+.2f} |")
        lines.append("")
    (RESULTS / "mixed_precision.md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
