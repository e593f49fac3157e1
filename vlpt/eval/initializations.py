"""Where a run's prompt starts: a suite's meta-learned initialisations (GRAM), made once before the runs that
start from them, and the method config of a run that starts from one of them or from another run's prompt.

An initialisation ``NAME`` lives in ``inits/NAME.pt`` beside its gradient regulator and ``NAME.spec.json``
(the settings, backbone and activation it was made with); one made with other settings is refused with the
files to delete. Each is claimed (``vlpt.eval.claims``) while it is made.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import torch

from vlpt.errors import CheckpointError, ConfigError
from vlpt.meta.gram import regulator_path_for
from vlpt.results import atomic_write_text


def checkpoint_problem(path: Path) -> str | None:
    """What is wrong with a checkpoint file a run starts from ("is missing", "cannot be read (...)"), or None."""
    if not path.is_file():
        return "is missing"
    try:
        torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated or overwritten: any reader failure
        return f"cannot be read ({type(exc).__name__}: {exc})"
    return None


def prepare_initializations(harness, names: set[str] | None = None) -> None:
    """Meta-learn each initialisation of the suite (of ``names`` only, when given: those a shard's runs start
    from) that is not on disk yet. Those another process is making are waited for afterwards (and made here
    if that process ends without them)."""
    wanted = [init for init in harness.suite.initializations if names is None or init.name in names]
    busy = [init for init in wanted if not _prepare(harness, init, wait=False)]
    for init in busy:
        print(f"waiting for initialisation {init.name!r}, which another process is making "
              f"({harness.claims.holder(f'init-{init.name}')})", flush=True)
        _prepare(harness, init, wait=True)


def _prepare(harness, init, wait: bool) -> bool:
    """Make one initialisation unless it is on disk; False when another process holds its claim."""
    from vlpt.meta.gram import run_gram

    claims = harness.claims
    claim = claims.claim(f"init-{init.name}") if wait else claims.try_claim(f"init-{init.name}")
    if claim is None:
        return False
    with claim:
        path = harness.init_path(init.name)
        spec_path = path.with_suffix(".spec.json")
        spec = json.dumps({**dataclasses.asdict(init), "backbone": harness.suite.backbone.describe(),
                           "activation": harness.backbone.activation}, sort_keys=True)
        if path.is_file() and spec_path.is_file():
            if spec_path.read_text() != spec:
                raise ConfigError(f"initialisation {init.name!r} in {path} was made with other settings than the "
                                  f"suite's ({spec_path}); delete both files to make it again")
            return True
        print(f"meta-learning initialisation {init.name!r} ({init.algorithm}, {init.method}, {init.steps} steps)")
        run_gram(init.method, harness.backbone, path, init.domains, init.steps, params=init.params,
                 data_root=harness.data_root, device=str(harness.device), **init.options)
        atomic_write_text(spec_path, spec)
    return True


def method_config(harness, run):
    """The run's method config, with ``init_from`` pointing at its source run's checkpoint (or its GRAM
    initialisation, with ``regulator_from`` its regulator); a missing or unreadable one raises CheckpointError
    saying what to delete."""
    if run.init_name is not None:
        path = harness.init_path(run.init_name)
        files = [path, regulator_path_for(path), path.with_suffix(".spec.json")]
        for file in files[:2]:
            problem = checkpoint_problem(file)
            if problem:
                raise CheckpointError(
                    f"run {run.identity.run_id} starts from initialisation {run.init_name!r}, but {file} "
                    f"{problem}; delete {', '.join(str(f) for f in files)} to make it again")
        return dataclasses.replace(run.method.config, init_from=str(path),
                                   regulator_from=str(regulator_path_for(path)))
    if run.init_source is None:
        return run.method.config
    path = harness.checkpoint_path(run.init_source)
    problem = checkpoint_problem(path)
    if problem:
        delete = f"delete {harness.store.path_for(run.init_source)}" if problem == "is missing" else \
            f"delete it and {harness.store.path_for(run.init_source)}"
        raise CheckpointError(
            f"run {run.identity.run_id} starts from the prompt of run {run.init_source.run_id} "
            f"({run.init_source.method} on {run.init_source.dataset}, seed {run.init_source.seed}), but {path} "
            f"{problem}; {delete} to run the source again"
        )
    return dataclasses.replace(run.method.config, init_from=str(path))
