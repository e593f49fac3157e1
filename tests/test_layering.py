"""The results layer is a leaf: reading, validating and publishing records loads neither torch nor Lightning."""
import subprocess
import sys

LEAF = ("import vlpt.results, vlpt.results.validate, vlpt.results.leaderboard, vlpt.results.site, sys; "
        "assert 'torch' not in sys.modules and 'lightning' not in sys.modules")


def test_results_imports_neither_torch_nor_lightning():
    done = subprocess.run([sys.executable, "-c", LEAF], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
