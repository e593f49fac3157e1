"""The `vlpt` command: run, bench, leaderboard (validate, merge), compare, pretrain, gram, predict, data prepare
and check, tta generate, list."""
from __future__ import annotations

import argparse
import contextlib
import json
import sys
import warnings
from pathlib import Path

from vlpt.errors import ConfigError, VlptError
from vlpt.paths import IN_CHECKOUT, LEADERBOARD_DIR, STARTER_WEIGHTS, default_data_root


@contextlib.contextmanager
def _warnings_on_stderr(*categories: type[Warning]):
    """Show every warning of ``categories`` (a record skipped or set aside, a feature cache entry recomputed,
    a mid-training checkpoint not used, a dataset unlike its catalog file) as a ``vlpt: warning:`` line on
    stderr as it happens; other warnings as usual."""
    with warnings.catch_warnings():
        shown = warnings.showwarning

        def show(message, category, filename, lineno, file=None, line=None):
            if issubclass(category, categories):
                print(f"vlpt: warning: {message}", file=sys.stderr, flush=True)
            else:
                shown(message, category, filename, lineno, file, line)

        for category in categories:
            warnings.simplefilter("always", category)
        warnings.showwarning = show
        yield


def _bench(args) -> None:
    from vlpt.data.consistency import DatasetWarning
    from vlpt.data.feature_cache import FeatureCacheWarning
    from vlpt.eval.resume import ResumeWarning
    from vlpt.results.store import RecordWarning

    with _warnings_on_stderr(RecordWarning, FeatureCacheWarning, ResumeWarning, DatasetWarning):
        _run_bench(args)


def _run_bench(args) -> None:
    from vlpt.eval.harness import Harness
    from vlpt.eval.suite import DEFAULT_SUITE, load_suite

    from vlpt.tta.generate import parse_shard

    if args.slurm is not None and args.shard:
        raise ConfigError(f"--slurm {args.slurm} submits every shard itself; leave out --shard {args.shard}")
    launch = {"--slurm-folder": args.slurm_folder, "--partition": args.partition, "--time-min": args.time_min,
              "--gpus": args.gpus, "--cpus": args.cpus, "--mem-gb": args.mem_gb, "--parallel": args.parallel,
              "--slurm-option": args.slurm_option, "--slurm-cluster": args.slurm_cluster}
    if args.slurm is None and any(value not in (None, []) for value in launch.values()):
        given = [name for name, value in launch.items() if value not in (None, [])]
        raise ConfigError(f"{', '.join(given)} only appl{'y' if len(given) > 1 else 'ies'} to submitting jobs; "
                          f"add --slurm N (the number of shard jobs)")
    for item in args.slurm_option:
        if "=" not in item or not item.partition("=")[0]:
            raise ConfigError(f"--slurm-option {item!r} must be KEY=VALUE, e.g. account=lab")
    if args.slurm is not None and args.set:
        raise ConfigError("--set applies to this process's suite only; the shard jobs read the suite file: write "
                          f"{', '.join(args.set)} into it (or a copy) for --slurm")
    suite = load_suite(args.suite or DEFAULT_SUITE, args.set)
    shard = parse_shard(args.shard) if args.shard else (0, 1)
    harness = Harness(suite, output=args.output, data_root=args.data_root, shard=shard)
    pending = harness.pending()
    part = f" (shard {shard[0]}/{shard[1]})" if shard[1] > 1 else ""
    print(f"suite {suite.name}: {len(suite.runs)} runs, {len(pending)} to do{part}, records in {harness.store.directory}")
    if args.dry_run:
        harness.check_data(pending)
        for run in pending:
            print("  ", json.dumps(run.identity.to_dict()))
        return
    if args.slurm is not None:
        from vlpt.eval.rebuild import rebuild_leaderboard
        from vlpt.eval.slurm import submit_suite, wait_for_shards

        options = dict(item.partition("=")[::2] for item in args.slurm_option)
        folder = Path(args.slurm_folder) if args.slurm_folder else harness.output / "slurm"
        jobs = submit_suite(suite.path, args.slurm, folder, harness.output, harness.data_root, args.slurm_cluster,
                            partition=args.partition, time_min=args.time_min, gpus=args.gpus, cpus=args.cpus,
                            mem_gb=args.mem_gb, parallel=args.parallel, additional=options or None)
        print(f"submitted {len(jobs)} shard jobs:", *[job.job_id for job in jobs])
        print(f"submitit logs in {folder.resolve()}")
        if args.slurm_cluster not in ("local", "debug"):
            print(f"records fill {harness.store.directory} and each shard rebuilds the leaderboard as it ends")
            return
        wait_for_shards(jobs)
        paths = rebuild_leaderboard(harness.output)
    else:
        paths = harness.run_all()
        elsewhere = len(pending) - len(harness.executed)
        if elsewhere > 0:
            print(f"{elsewhere} of the {len(pending)} runs to do were run by other processes")
    print("leaderboard written to:", *[str(p) for p in paths], sep="\n  ")


def _run(args) -> None:
    from vlpt.eval.one_line import dataset_argument, one_line_suite, write_suite

    label = dataset_argument(args.dataset).name
    output = Path(args.output or Path("runs") / f"{Path(args.method).stem}-{label}-{args.protocol}")
    suite = one_line_suite(args.method, args.dataset, protocol=args.protocol, shots=args.shots, seeds=args.seeds,
                           targets=args.targets, backbone=args.backbone, output=output, data_root=args.data_root,
                           params=args.param, overrides=args.set)
    path = write_suite(suite, output)
    print(f"suite written to {path}")
    bench = argparse.Namespace(suite=str(path), output=None, data_root=None, dry_run=args.dry_run, shard=None,
                               set=[], slurm=None, slurm_folder=None, partition=None, time_min=None, gpus=None,
                               cpus=None, mem_gb=None, parallel=None, slurm_option=[], slurm_cluster=None)
    _bench(bench)


def _leaderboard(args) -> None:
    from vlpt.eval.rebuild import links_curves
    from vlpt.results import RecordWarning, write_leaderboard

    output = Path(args.output)
    with _warnings_on_stderr(RecordWarning):
        paths = write_leaderboard(output / "records", output, html=args.html, link_curves=links_curves(output))
    print("leaderboard written to:", *[str(p) for p in paths], sep="\n  ")


def _leaderboard_validate(args) -> int:
    from vlpt.registry import method_names
    from vlpt.results.validate import validate_records

    report = validate_records(args.directory, method_names())
    for problem in report.problems:
        print(problem)
    bad = len(report.invalid_files)
    print(f"{report.checked} record file(s) checked: {len(report.valid)} valid, {bad} with problems "
          f"({len(report.problems)} problem(s))", file=sys.stderr if bad else sys.stdout)
    return 1 if report.problems else 0


def _leaderboard_merge(args) -> int:
    from vlpt.eval.rebuild import links_curves
    from vlpt.registry import method_names
    from vlpt.results.merge import merge_records

    report = merge_records(args.sources, args.into, method_names(), link_curves=links_curves(Path(args.into)))
    for problem in report.problems:
        print(f"refused: {problem}")
    for conflict in report.conflicts:
        print(f"conflict: {conflict}")
    refused = len({p.file for p in report.problems})
    repeated = f", {len(report.repeated)} given twice" if report.repeated else ""
    print(f"merged {len(report.copied)} record(s) into {Path(args.into) / 'records'}; {len(report.unchanged)} "
          f"already there{repeated}, {refused} refused, {len(report.conflicts)} conflict(s)")
    print("leaderboard written to:", *[str(p) for p in report.leaderboard], sep="\n  ")
    return 0 if report.ok else 1


def _compare(args) -> None:
    import warnings

    from vlpt.results.compare import ALPHA, compare_records, format_rows, parse_side
    from vlpt.results.store import RecordStore, RecordWarning
    from vlpt.results.validate import records_folder

    folder = records_folder(args.output)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", RecordWarning)
        records = RecordStore(folder).records()
    for warning in caught:
        if issubclass(warning.category, RecordWarning):
            print(f"vlpt: warning: {warning.message}", file=sys.stderr)
        else:
            warnings.warn_explicit(warning.message, warning.category, warning.filename, warning.lineno)
    a, b = parse_side(args.a, records), parse_side(args.b, records)
    rows = compare_records(records, a, b, metric=args.metric)
    if not rows:
        what = f"metric {args.metric!r}" if args.metric else "a metric"
        raise ConfigError(f"{a} and {b} share no runs with {what} in {folder} (same protocol, backbone, dataset, "
                          f"shots, targets and seed)")
    if args.json:
        print(json.dumps({"a": str(a), "b": str(b), "metric": args.metric, "alpha": ALPHA,
                          "rows": [row.to_dict() for row in rows]}, indent=2))
    else:
        print(format_rows(rows, a, b), end="")


def _pretrain(args) -> None:
    from vlpt.starter.pretrain import pretrain_starter

    card = pretrain_starter(Path(args.out), steps=args.steps, batch_size=args.batch_size, lr=args.lr, seed=args.seed)
    print(json.dumps(card, indent=2))


def _gram(args) -> None:
    from vlpt.meta.gram import run_gram

    domains = args.domain or "starter"
    params = dict(item.split("=", 1) for item in args.param)
    result = run_gram(args.method, args.backbone, args.out, domains, args.steps,
                      params={k: _yaml_value(v) for k, v in params.items()}, data_root=args.data_root,
                      batch_size=args.batch_size, inner_lr=args.inner_lr, outer_lr=args.outer_lr, seed=args.seed)
    print(f"initialisation: {result.checkpoint}\nregulator: {result.regulator_path}")


def _yaml_value(text: str):
    import yaml

    return yaml.safe_load(text)


def prepare_dataset(name: str, root: str | Path, download_files: bool = True) -> str:
    """``vlpt data prepare NAME``: a segmentation set (:func:`vlpt.seg.datasets.prepare_seg_dataset`) or a
    classification set (:func:`vlpt.data.prepare.prepare_dataset`); returns what was done, or the manual steps."""
    from vlpt.data.prepare import PREPARABLE
    from vlpt.data.prepare import prepare_dataset as prepare_classification
    from vlpt.seg.datasets import prepare_seg_dataset, seg_dataset_names

    if name in seg_dataset_names():
        return prepare_seg_dataset(name, Path(root))
    if name not in PREPARABLE:
        raise ConfigError(f"unknown dataset {name!r} for `vlpt data prepare`; valid: "
                          f"{', '.join(PREPARABLE)}, and the segmentation sets {', '.join(seg_dataset_names())}")
    return prepare_classification(name, root, download_files)


def _prepare(args) -> None:
    print(prepare_dataset(args.name, Path(args.root)))


def _data_check(args) -> int:
    from vlpt.data import load_dataset
    from vlpt.data.catalog import add_user_dataset
    from vlpt.data.check import dataset_report
    from vlpt.data.consistency import DatasetWarning
    from vlpt.eval.one_line import dataset_argument
    from vlpt.eval.suite import load_suite
    from vlpt.seg.check import seg_dataset_report
    from vlpt.seg.datasets import is_seg_dataset, load_seg_dataset

    root = Path(args.root) if args.root else default_data_root()
    if args.suite:
        suite = load_suite(args.suite)  # defines the suite's own datasets
        root = Path(args.root or suite.data_root or root)
    found = dataset_argument(args.dataset)
    name, root = found.name, found.data_root or root
    if found.definition:
        add_user_dataset(name, found.definition, f"vlpt data check {args.dataset}", Path.cwd())
    if is_seg_dataset(name):
        lines, problems = seg_dataset_report(load_seg_dataset(name, root), open_images=args.open_images)
    else:
        with _warnings_on_stderr(DatasetWarning):
            splits = load_dataset(name, root)
        lines, problems = dataset_report(splits, open_images=args.open_images)
    print(*lines, sep="\n")
    if problems:
        print(f"{len(problems)} problem(s):", *[f"  {p}" for p in problems], sep="\n")
        return 1
    print("no problems found" + ("" if args.open_images else " (add --open-images to decode every image)"))
    return 0


def _predict(args) -> None:
    import csv
    import io

    from vlpt.eval.predict import image_paths, load_trained_method, predict, predict_masks

    paths = image_paths(args.images, leave_out=Path(args.output) if args.output else None)
    method = load_trained_method(args.checkpoint, args.device or "cpu")
    if method.task == "segmentation":
        if args.output is None:
            raise ConfigError("a segmentation checkpoint writes one mask PNG per image: give --output FOLDER")
        written = predict_masks(method, paths, Path(args.output), args.batch_size)
        print(f"{len(written)} masks written to {Path(args.output).resolve()}")
        return
    rows = predict(method, paths, args.batch_size)
    text = io.StringIO()
    writer = csv.writer(text, delimiter="\t" if args.output is None else ",", lineterminator="\n")
    writer.writerow(["image", "class", "probability"])
    writer.writerows((str(path), name, f"{p:.4f}") for path, name, p in rows)
    if args.output is None:
        print(text.getvalue(), end="")
    else:
        from vlpt.results import atomic_write_text

        print(f"{len(rows)} predictions written to {atomic_write_text(Path(args.output), text.getvalue())}")


def _tta_generate(args) -> None:
    import torch

    from vlpt.data import load_dataset
    from vlpt.tta.diffusion import DiffusionSettings, DiffusionViewGenerator
    from vlpt.tta.generate import generate_views, parse_shard
    from vlpt.tta.store import DEFAULT_FOLDER, ViewStore

    options = {"pipeline": args.pipeline, "revision": args.revision, "guidance_scale": args.guidance,
               "inference_steps": args.steps, "views": args.views, "seed": args.seed, "dtype": args.dtype}
    try:
        settings = DiffusionSettings(**{k: v for k, v in options.items() if v is not None})
    except ValueError as exc:
        raise ConfigError(f"vlpt tta generate: {exc}") from exc
    if args.limit is not None and args.limit < 1:
        raise ConfigError(f"--limit must be at least 1, got {args.limit}")
    shard = parse_shard(args.shard)
    data_root = Path(args.data_root) if args.data_root else default_data_root()
    store = ViewStore(args.store or data_root / DEFAULT_FOLDER)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    generator = DiffusionViewGenerator(settings, device)  # shared: the pipeline loads once, if at all
    for name in args.datasets:
        samples = getattr(load_dataset(name, data_root), args.split)[:args.limit]
        report = generate_views(samples, store, settings, device, shard, progress=True, generator=generator)
        print(f"{name} {args.split} (shard {shard[0]}/{shard[1]}): generated {report.generated}, reused "
              f"{report.reused}, regenerated {report.regenerated}, other shards {report.skipped_other_shards}; "
              f"views in {store.settings_folder(settings)}")


def _list(args) -> None:
    from vlpt.registry import DATASETS, METHODS, SEG_METHODS

    from vlpt.data.corruptions import CORRUPTIONS
    from vlpt.factory import shipped_config_names

    from vlpt.seg.datasets import seg_dataset_names
    from vlpt.seg.vlsm import CLIPSEG_HUB_MODELS, TINY_RANDOM

    print("methods:    ", ", ".join(METHODS.names()))
    print("method configs:", ", ".join(shipped_config_names()), "(or a .yaml file)")
    print("datasets:   ", ", ".join(DATASETS.names()))
    print("corruptions:", ", ".join(sorted(CORRUPTIONS)), "(as DATASET~NAME:SEVERITY, severity 1-5)")
    print("segmentation methods: ", ", ".join(SEG_METHODS.names()))
    print("segmentation datasets:", ", ".join(seg_dataset_names()))
    print("segmentation models:   clip_decoder (the suite's backbone + a CLIPSeg-style decoder), clipseg:",
          ", ".join([*CLIPSEG_HUB_MODELS, TINY_RANDOM]))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vlpt", description="Vision-language prompt tuning benchmark")
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser(
        "run", help="one method on one dataset in one line: builds its suite, runs it, writes records and a "
                    "leaderboard",
        description="Build the suite of METHOD on DATASET, write it to OUTPUT/suite.yaml (run it again with `vlpt "
                    "bench --suite OUTPUT/suite.yaml`) and run it with the same harness, records and leaderboard "
                    "as `vlpt bench`.")
    run.add_argument("method", metavar="METHOD", help="method config name or .yaml path (see `vlpt list`)")
    run.add_argument("dataset", metavar="DATASET", help="dataset name (see `vlpt list`), or a folder of your "
                                                        "images: train/ and test/ class folders, or class folders")
    run.add_argument("--protocol", default="few_shot", help="protocol (default: few_shot)")
    run.add_argument("--shots", type=int, nargs="+", default=[16], help="shots per class (default: 16)")
    run.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3], help="seeds (default: 1 2 3)")
    run.add_argument("--targets", nargs="+", default=[], help="evaluation datasets of protocols that take them")
    run.add_argument("--backbone", default="ViT-B-16@openai",
                     help="MODEL@PRETRAINED (default: ViT-B-16@openai; offline: vlpt-starter-vit@vlpt-starter)")
    run.add_argument("--param", action="append", default=[], metavar="KEY=VALUE",
                     help="a method setting, e.g. epochs=5 or lr=0.01 (repeatable)")
    run.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                     help="any suite value by its dotted path, e.g. trainer.precision=bf16-mixed (repeatable)")
    run.add_argument("--output", help="folder for the suite, records and leaderboard "
                                      "(default: runs/METHOD-DATASET-PROTOCOL)")
    run.add_argument("--data-root", help="folder holding the datasets (default: $VLPT_DATA or ./data)")
    run.add_argument("--dry-run", action="store_true", help="write and validate the suite, list its runs")
    run.set_defaults(func=_run)

    bench = commands.add_parser("bench", help="run a suite (default: the offline starter suite)")
    bench.add_argument("--suite", help="suite YAML file (default: the starter suite, vlpt/configs/suites/starter.yaml)")
    bench.add_argument("--output", help="folder for records/ and the leaderboard (default: the suite's, else the "
                                        "checkout's leaderboard/, or ./leaderboard for an installed wheel)")
    bench.add_argument("--data-root", help="folder holding the datasets (default: $VLPT_DATA or ./data)")
    bench.add_argument("--dry-run", action="store_true", help="validate the suite, check the data of its pending runs, and list them")
    bench.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                       help="override a suite value by its dotted path, validated like the file (repeatable), "
                            "e.g. experiments.0.params.epochs=5 or trainer.precision=bf16-mixed")
    bench.add_argument("--shard", help="I/N: run only shard I of N (0-based), e.g. one SLURM array task each; "
                                       "shards share the output folder and merge by construction")
    slurm = bench.add_argument_group("SLURM", "submit the suite as an array of shard jobs (needs vlpt[slurm])")
    slurm.add_argument("--slurm", type=int, metavar="N",
                       help="submit N shard jobs (job I runs --shard I/N) instead of running here")
    slurm.add_argument("--slurm-folder", help="submitit logs and job files (default: <output>/slurm)")
    slurm.add_argument("--partition", help="SLURM partition")
    slurm.add_argument("--time-min", type=int, help="time limit of each job in minutes (required on SLURM)")
    slurm.add_argument("--gpus", type=int, help="GPUs per job")
    slurm.add_argument("--cpus", type=int, help="CPUs per job")
    slurm.add_argument("--mem-gb", type=float, help="memory per job in GB")
    slurm.add_argument("--parallel", type=int, help="at most this many shard jobs at once (array parallelism)")
    slurm.add_argument("--slurm-option", action="append", default=[], metavar="KEY=VALUE",
                       help="further sbatch option, e.g. account=lab or qos=high (repeatable)")
    slurm.add_argument("--slurm-cluster", choices=("slurm", "local", "debug"),
                       help="local or debug: run the shard jobs on this machine through submitit (in subprocesses, "
                            "or one after another in this process) and wait for them, to try a launch")
    bench.set_defaults(func=_bench)

    board = commands.add_parser(
        "leaderboard", help="rebuild LEADERBOARD.md, leaderboard.csv (and index.html) from records; validate or merge "
                            "records",
        description="Without a subcommand: rebuild LEADERBOARD.md and leaderboard.csv in --output from its records/ "
                    "(and index.html, the web page, with --html or once one is there). "
                    "`validate DIR` checks record files; `merge SRC... --into OUTPUT` adds valid external records.")
    board.add_argument("--output", default=str(LEADERBOARD_DIR), help="folder holding records/ (default: leaderboard/)")
    board.add_argument("--html", action="store_true",
                       help="also write OUTPUT/index.html: a self-contained page with sortable tables and plots "
                            "(every later rebuild of OUTPUT keeps it up to date)")
    board.set_defaults(func=_leaderboard)
    board_commands = board.add_subparsers(dest="board_command", metavar="{validate,merge}")
    check = board_commands.add_parser("validate", help="check record files against the record schema (exit 1 on "
                                                       "any problem)")
    check.add_argument("directory", metavar="DIR", help="records folder, output folder holding records/, or one "
                                                        "record file")
    check.set_defaults(func=_leaderboard_validate)
    merge = board_commands.add_parser("merge", help="validate external records, copy the valid ones into "
                                                    "OUTPUT/records and rebuild OUTPUT's leaderboard")
    merge.add_argument("sources", nargs="+", metavar="SRC", help="records folder, output folder or record file")
    merge.add_argument("--into", required=True, metavar="OUTPUT", help="leaderboard folder (records go to "
                                                                       "OUTPUT/records)")
    merge.set_defaults(func=_leaderboard_merge)

    compare = commands.add_parser("compare", help="two methods or variants side by side: paired differences "
                                                  "over seeds and a paired t-test")
    compare.add_argument("a", metavar="A", help="METHOD or METHOD/VARIANT (METHOD alone: its default variant, "
                                                "or its only one)")
    compare.add_argument("b", metavar="B", help="METHOD or METHOD/VARIANT; differences are B - A")
    compare.add_argument("--output", default=str(LEADERBOARD_DIR),
                         help="folder holding records/, or the records folder (default: leaderboard/)")
    compare.add_argument("--metric", help="metric to compare (default: accuracy; dice for segmentation)")
    compare.add_argument("--json", action="store_true", help="print the rows as JSON")
    compare.set_defaults(func=_compare)

    pretrain = commands.add_parser("pretrain", help="train the starter CLIP from scratch on generated data")
    pretrain.add_argument("--steps", type=int, default=700)
    pretrain.add_argument("--batch-size", type=int, default=256)
    pretrain.add_argument("--lr", type=float, default=1e-3)
    pretrain.add_argument("--seed", type=int, default=0)
    pretrain.add_argument("--out", default=str(STARTER_WEIGHTS if IN_CHECKOUT else STARTER_WEIGHTS.name),
                          help="output .safetensors path (default: the shipped weights in a checkout, else ./"
                               f"{STARTER_WEIGHTS.name}: an installed package is never written to)")
    pretrain.set_defaults(func=_pretrain)

    gram = commands.add_parser("gram", help="meta-learn a prompt initialisation with GRAM (use it with init_from)")
    gram.add_argument("method", help="method config, e.g. coop_m4")
    gram.add_argument("--out", required=True, help="output checkpoint (.pt)")
    gram.add_argument("--backbone", default="vlpt-starter-vit@vlpt-starter", help="MODEL@PRETRAINED, +quickgelu or +gelu for a checkpoint that does not state its activation")
    gram.add_argument("--domain", action="append", help="NAME=PATH[,PATH...]: caption folder or tar shards "
                      "(repeat per domain; default: captioned starter images)")
    gram.add_argument("--param", action="append", default=[], help="KEY=VALUE method config override")
    gram.add_argument("--data-root", help="where the starter caption images are generated")
    gram.add_argument("--steps", type=int, default=300)
    gram.add_argument("--batch-size", type=int, default=32)
    gram.add_argument("--inner-lr", type=float, default=0.01)
    gram.add_argument("--outer-lr", type=float, default=0.005)
    gram.add_argument("--seed", type=int, default=0)
    gram.set_defaults(func=_gram)

    predict = commands.add_parser("predict", help="classify or segment images with a trained prompt (a run's "
                                                  "checkpoint)")
    predict.add_argument("checkpoint", metavar="CHECKPOINT", help="a run's OUTPUT/checkpoints/RUN_ID.pt")
    predict.add_argument("images", nargs="+", metavar="IMAGES", help="image files or folders (searched recursively)")
    predict.add_argument("--output", help="classification: write a CSV here instead of printing tab-separated lines; "
                                          "segmentation (required): the folder of the mask PNGs")
    predict.add_argument("--batch-size", type=int, default=16)
    predict.add_argument("--device", help="torch device (default: cpu)")
    predict.set_defaults(func=_predict)

    data = commands.add_parser("data", help="dataset tools")
    data_commands = data.add_subparsers(dest="data_command", required=True)
    prepare = data_commands.add_parser("prepare", help="download or lay out a dataset, or print the manual steps")
    prepare.add_argument("name")
    prepare.add_argument("--root", required=True, help="data root that will hold the dataset folder")
    prepare.set_defaults(func=_prepare)

    check = data_commands.add_parser("check", help="what a dataset holds (classes, images per split) and its "
                                                   "problems, before any training (exit 1 on a problem)")
    check.add_argument("dataset", metavar="DATASET", help="dataset name (segmentation too), or a folder of class "
                                                          "folders (with or without train/ and test/)")
    check.add_argument("--root", help="data root (default: the suite's, else $VLPT_DATA or ./data)")
    check.add_argument("--suite", help="a suite whose `datasets:` define DATASET")
    check.add_argument("--open-images", action="store_true", help="decode every image (slower)")
    check.set_defaults(func=_data_check)

    tta = commands.add_parser("tta", help="test-time adaptation tools")
    tta_commands = tta.add_subparsers(dest="tta_command", required=True)
    generate = tta_commands.add_parser("generate", help="generate and store DiffTPT's diffusion views of datasets "
                                       "(resumable: stored views are reused)")
    generate.add_argument("datasets", nargs="+", metavar="DATASET", help="dataset name, e.g. pacs@sketch")
    generate.add_argument("--split", choices=("train", "val", "test"), default="test")
    generate.add_argument("--store", help="view store folder (default: <data-root>/generated_views)")
    generate.add_argument("--pipeline", help="hub id, local pipeline folder or tiny-random "
                          "(default: lambdalabs/sd-image-variations-diffusers)")
    generate.add_argument("--revision", help="hub revision (default: v2.0)")
    generate.add_argument("--guidance", type=float, help="guidance scale (default: 3)")
    generate.add_argument("--steps", type=int, help="denoising steps (default: 50)")
    generate.add_argument("--views", type=int,
                          help="views generated per image (default: 63, as DiffTPT's reference code)")
    generate.add_argument("--seed", type=int, help="generation seed (default: 0)")
    generate.add_argument("--dtype", choices=("fp32", "fp16"), help="fp16 needs CUDA (default: fp32)")
    generate.add_argument("--shard", default="0/1", help="I/N: only samples whose index i has i %% N == I")
    generate.add_argument("--limit", type=int, help="only the first N samples of the split")
    generate.add_argument("--data-root", help="folder holding the datasets (default: $VLPT_DATA or ./data)")
    generate.add_argument("--device", help="torch device (default: cuda if available, else cpu)")
    generate.set_defaults(func=_tta_generate)

    listing = commands.add_parser("list", help="list registered methods, datasets and corruptions")
    listing.set_defaults(func=_list)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        status = args.func(args)
    except VlptError as exc:
        print(f"vlpt: error: {exc}", file=sys.stderr)
        return 2
    return int(status or 0)


if __name__ == "__main__":
    sys.exit(main())
