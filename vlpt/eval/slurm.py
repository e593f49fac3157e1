"""Submitting a suite to a SLURM cluster as an array of shard jobs (`vlpt bench --slurm N`), via submitit.

Array task I runs shard I of N (what `vlpt bench --shard I/N` runs) into one output folder. Records are
one file per run and a run belongs to exactly one shard, so the shards' records merge by construction.
Every shard rebuilds the leaderboard from all records in the folder when it ends, whatever order the
shards end in; a shard whose rebuild raced with another shard's last record rebuilds again, so the
shard that writes the leaderboard last writes the complete one (see :func:`vlpt.eval.rebuild.rebuild_leaderboard`).
``cluster="local"`` or ``"debug"`` runs the same jobs on this machine (in subprocesses, or in this
process when their results are asked for), to try a launch without a cluster.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from vlpt.errors import ConfigError
from vlpt.eval.rebuild import rebuild_leaderboard

INSTALL_HINT = 'pip install "vlpt[slurm]"'
#: submitit executors: a SLURM cluster, subprocesses on this machine, or this process
CLUSTERS = ("slurm", "local", "debug")


def run_shard(suite_path: str | Path, index: int, count: int, output: str | Path,
              data_root: str | Path | None) -> dict[str, Any]:
    """Run shard ``index`` of ``count`` of the suite into ``output`` (the body of one array task).

    Returns ``{"shard": "I/N", "ran": [run ids executed], "leaderboard": [its files]}``.
    """
    from vlpt.eval.harness import Harness
    from vlpt.eval.suite import load_suite

    harness = Harness(load_suite(suite_path), output=Path(output), data_root=data_root and Path(data_root),
                      progress=False, shard=(index, count))
    ran = [run.identity.run_id for run in harness.pending()]
    harness.run_all()
    paths = rebuild_leaderboard(harness.output)
    return {"shard": f"{index}/{count}", "ran": ran, "leaderboard": [str(p) for p in paths]}


def _check_count(name: str, value, minimum: int = 1) -> None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < minimum):
        raise ConfigError(f"{name} must be a whole number of at least {minimum}, got {value!r}")


def _import_submitit():
    try:
        import submitit
    except ImportError as exc:
        raise ConfigError(f"submitting to SLURM needs the submitit package, which is not installed: "
                          f"{INSTALL_HINT}") from exc
    return submitit


def make_executor(folder: str | Path, cluster: str = "slurm", *, name: str = "vlpt", partition: str | None = None,
                  time_min: int | None = None, gpus: int | None = None, cpus: int | None = None,
                  mem_gb: float | None = None, parallel: int | None = None,
                  additional: dict[str, Any] | None = None):
    """A ``submitit.AutoExecutor`` writing its logs to ``folder``, with these SLURM settings.

    ``time_min`` is the job time limit in minutes (required on SLURM: submitit's default is 5),
    ``gpus`` GPUs per node, ``cpus`` CPUs per task, ``parallel`` how many array tasks run at once,
    and ``additional`` further sbatch options by name (e.g. ``{"account": "lab", "qos": "high"}``).
    Settings other than SLURM's own (partition, parallel, additional) are ignored by local executors.
    """
    if cluster not in CLUSTERS:
        raise ConfigError(f"cluster must be one of {', '.join(CLUSTERS)}, got {cluster!r}")
    _check_count("time_min (minutes)", time_min)
    _check_count("gpus", gpus, minimum=0)
    _check_count("cpus", cpus)
    _check_count("parallel (array tasks at once)", parallel)
    if mem_gb is not None and (isinstance(mem_gb, bool) or not isinstance(mem_gb, (int, float)) or mem_gb <= 0):
        raise ConfigError(f"mem_gb must be a positive number of GB, got {mem_gb!r}")
    if cluster == "slurm" and time_min is None:
        raise ConfigError("give the SLURM job time limit in minutes (time_min, --time-min): "
                          "submitit would otherwise ask for 5 minutes")
    if additional is not None and not isinstance(additional, dict):
        raise ConfigError(f"additional sbatch options must be a mapping of option to value, got {additional!r}")
    submitit = _import_submitit()
    try:
        executor = submitit.AutoExecutor(folder=str(folder), cluster=cluster)
    except RuntimeError as exc:  # no srun on this machine
        raise ConfigError(f"cannot submit to SLURM from this machine ({exc}); run on a login node of the "
                          f"cluster, or use cluster 'local' or 'debug' to try the jobs here") from exc
    settings = {"name": name, "timeout_min": time_min, "gpus_per_node": gpus, "cpus_per_task": cpus,
                "mem_gb": float(mem_gb) if mem_gb is not None else None, "slurm_partition": partition,
                "slurm_array_parallelism": parallel, "slurm_additional_parameters": additional or None}
    executor.update_parameters(**{key: value for key, value in settings.items() if value is not None})
    return executor


def submit_suite(suite_path: str | Path, shards: int, folder: str | Path | None = None,
                 output: str | Path | None = None, data_root: str | Path | None = None,
                 cluster: str | None = None, **slurm_params) -> list:
    """Submit the suite as an array of ``shards`` jobs, job I running shard I/``shards``; returns the jobs.

    The suite and its records are checked before anything is submitted. ``output`` and ``data_root`` default as for ``vlpt bench`` and reach the jobs as
    absolute paths; ``folder`` (submitit's logs and pickles) defaults to ``<output>/slurm``.
    ``cluster`` is ``"slurm"`` (the default), ``"local"`` or ``"debug"``; ``slurm_params`` are
    ``make_executor``'s settings (partition, time_min, gpus, cpus, mem_gb, parallel, additional).
    """
    from vlpt.eval.harness import Harness
    from vlpt.eval.suite import load_suite

    _check_count("shards (jobs to submit)", shards)
    suite = load_suite(suite_path)
    harness = Harness(suite, output=output and Path(output), data_root=data_root and Path(data_root), progress=False)
    harness.pending()  # a record made with other settings than the suite's fails here, not in every job
    output, data_root = harness.output.resolve(), harness.data_root.resolve()
    folder = Path(folder) if folder is not None else output / "slurm"
    slurm_params.setdefault("name", f"vlpt-{suite.name}")
    executor = make_executor(folder, cluster or "slurm", **slurm_params)
    indices = list(range(shards))
    return executor.map_array(run_shard, [str(suite.path.resolve())] * shards, indices, [shards] * shards,
                              [str(output)] * shards, [str(data_root)] * shards)


def wait_for_shards(jobs: list) -> list[dict[str, Any]]:
    """Wait for every shard job (running a ``debug`` job here and now) and return their results in order."""
    return [job.result() for job in jobs]


__all__ = ["CLUSTERS", "INSTALL_HINT", "make_executor", "run_shard", "submit_suite",
           "wait_for_shards"]
