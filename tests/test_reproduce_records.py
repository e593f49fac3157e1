"""The committed leaderboard is reproducible: runs of the default suite executed again by today's code, under
whatever data root this checkout uses, give the committed records' metrics exactly (timings aside). Per-image
random draws (per-epoch training crops, TPT's views, corruptions) are seeded by each image's path within the
data root (``Sample.key``), so where the data lies changes nothing. One run per kind of training path:
zero-shot, the linear probe, CoOp-style text prompts on stored per-epoch crops (KgCoOp), CoCoOp's per-image
prompts, image prompts (VPT), both towers (MaPLe), the multitask source (MVLPT), test-time tuning on AugMix
views (TPT) and a segmentation prompt."""
from __future__ import annotations

import pytest

from checkout import LEADERBOARD
from vlpt.eval.harness import Harness
from vlpt.eval.suite import DEFAULT_SUITE, load_suite
from vlpt.results import RecordStore

pytestmark = pytest.mark.slow  # executes nine runs of the starter suite

#: (method, variant, protocol, seed) of the runs executed again
CHOSEN = [
    ("zeroshot", "default", "few_shot", 1), ("linear_probe", "default", "few_shot", 2),
    ("kgcoop", "default", "base_to_novel", 3), ("cocoop", "default", "base_to_novel", 1),
    ("vpt", "default", "base_to_novel", 2), ("maple", "default", "base_to_novel", 2),
    ("coop", "coop_m4", "multitask", 1), ("tpt", "default", "test_time", 1), ("seg_vpt", "default", "segmentation", 1),
]


def _metrics(record) -> dict:
    """Metrics without timings (per-image adaptation time varies from run to run)."""
    return {name: {k: v for k, v in values.items() if not k.endswith("_ms_per_image")}
            for name, values in record.metrics.items()}


def test_committed_records_are_reproduced(tmp_path):
    store = RecordStore(LEADERBOARD / "records")
    if not store.directory.is_dir():
        pytest.skip("no committed leaderboard records")
    suite = load_suite(DEFAULT_SUITE)
    runs = {(r.identity.method, r.identity.variant, r.identity.protocol, r.identity.seed): r for r in suite.runs
            if r.init_source is None and r.init_name is None}
    harness = Harness(suite, output=tmp_path / "out", progress=False)
    for key in CHOSEN:
        run = runs[key]
        committed = store.get(run.identity)
        assert committed is not None, f"no committed record of {run.identity.describe()}"
        again, before = _metrics(harness.execute(run)), _metrics(committed)
        assert again == before, run.identity.describe()
