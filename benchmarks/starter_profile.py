"""Where the starter suite's time goes: run time per experiment and method, and the time outside runs.

    python benchmarks/starter_profile.py --run --label after       # runs `vlpt bench` (about 15 minutes on 2 cores)
    python benchmarks/starter_profile.py --records DIR --label before   # summarises records made earlier

``--run`` runs the starter suite in a fresh ``vlpt bench`` process into a temporary folder with an empty feature
cache (as on a fresh clone, the datasets aside), measures its wall time, and sums the records' ``wall_s`` per
group; the rest of the wall time is start-up, dataset loading, GRAM initialisations, DiffTPT's view generation
and the leaderboard. ``--records`` summarises a records folder (its wall time is unknown unless ``--wall-s``
gives it). Each label's profile is merged into ``benchmarks/results/starter_profile.{json,md}``.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"


def group_of(record: dict) -> str:
    identity = record["identity"]
    variant = "" if identity["variant"] == "default" else f"/{identity['variant']}"
    return f"{identity['protocol']}: {identity['method']}{variant}"


def profile(records: list[dict], wall_s: float | None, commit: str | None) -> dict:
    groups = defaultdict(lambda: {"runs": 0, "wall_s": 0.0})
    for record in records:
        group = groups[group_of(record)]
        group["runs"] += 1
        group["wall_s"] += record["timings"]["wall_s"]
    in_runs = sum(g["wall_s"] for g in groups.values())
    ordered = sorted(groups.items(), key=lambda item: -item[1]["wall_s"])
    return {"commit": commit, "runs": len(records), "wall_s": None if wall_s is None else round(wall_s, 1),
            "in_runs_s": round(in_runs, 1),
            "outside_runs_s": None if wall_s is None else round(wall_s - in_runs, 1),
            "groups": {name: {"runs": g["runs"], "wall_s": round(g["wall_s"], 1)} for name, g in ordered}}


def read_records(folder: Path) -> list[dict]:
    return [json.loads(path.read_text()) for path in sorted(Path(folder).glob("*.json"))]


def run_suite() -> tuple[list[dict], float]:
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "VLPT_CACHE": str(Path(tmp) / "cache")}
        started = time.perf_counter()
        subprocess.run([sys.executable, "-m", "vlpt.cli", "bench", "--output", str(Path(tmp) / "out")], cwd=ROOT,
                       env=env, check=True, stdout=subprocess.DEVNULL)
        wall = time.perf_counter() - started
        return read_records(Path(tmp) / "out" / "records"), wall


def write(results: dict) -> None:
    (RESULTS / "starter_profile.json").write_text(json.dumps(results, indent=2) + "\n")
    labels = list(results["profiles"])
    lines = ["# Where the starter suite's time goes", "",
             "`python benchmarks/starter_profile.py`: the starter suite's runs on this 2-core CPU, seconds of "
             "run time (the records' `wall_s`) per protocol and method, and the time spent outside runs "
             "(start-up, datasets, GRAM initialisations, the leaderboard). A label run with `--run` starts from an "
             "empty feature cache, as a fresh clone does; runs that fill the cache (the first run of each view "
             "setting and seed) carry the encoding.", ""]
    for label in labels:
        p = results["profiles"][label]
        wall = f"{p['wall_s']} s ({p['wall_s'] / 60:.1f} min)" if p["wall_s"] else "not measured"
        lines.append(f"- **{label}** (commit {p['commit'] or 'unknown'}, {p['runs']} runs): suite wall time {wall}; "
                     f"{p['in_runs_s']} s in runs" + (f", {p['outside_runs_s']} s outside them" if p["wall_s"] else ""))
    lines += ["", "| protocol: method | runs | " + " | ".join(f"{label} (s)" for label in labels) + " |",
              "|---|---:|" + "---:|" * len(labels)]
    names = list(dict.fromkeys(n for label in labels for n in results["profiles"][label]["groups"]))
    for name in names:
        cells = [results["profiles"][label]["groups"].get(name) for label in labels]
        runs = next(c["runs"] for c in cells if c)
        lines.append(f"| {name} | {runs} | " + " | ".join(f"{c['wall_s']}" if c else "" for c in cells) + " |")
    lines.append("| **all runs** | | " + " | ".join(str(results["profiles"][label]["in_runs_s"]) for label in labels) + " |")
    (RESULTS / "starter_profile.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--run", action="store_true", help="run the starter suite now")
    source.add_argument("--records", help="a records folder to summarise")
    parser.add_argument("--label", required=True)
    parser.add_argument("--wall-s", type=float, help="the wall time of the run that made --records")
    parser.add_argument("--commit", help="the commit that made --records")
    args = parser.parse_args()
    if args.run:
        records, wall = run_suite()
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                                text=True).stdout.strip() or None
    else:
        records, wall, commit = read_records(Path(args.records)), args.wall_s, args.commit
    path = RESULTS / "starter_profile.json"
    results = json.loads(path.read_text()) if path.is_file() else {"profiles": {}}
    results["device"] = platform.processor() or platform.machine()
    results["profiles"][args.label] = profile(records, wall, commit)
    RESULTS.mkdir(parents=True, exist_ok=True)
    write(results)


if __name__ == "__main__":
    main()
