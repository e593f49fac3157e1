"""Machinery of the differential test against the reference implementations.

The reference code is imported at run time from the checkouts under ``$VLPT_REFERENCE_ROOT``;
nothing of it is stored in vlpt. Each repository's own ``clip`` package is loaded under a name of
its own, so the four copies never collide, and the framework modules its trainers import (Dassl,
``pkg_resources``) are replaced by small stand-ins while it loads: the compared classes
(PromptLearner, TextEncoder, CustomCLIP, TPT's functions) never call them.

Run as a script, ``python tests/reference/harness.py report.json`` prints the table of
``docs/fidelity.md`` (Differential check) from a report written by the test.
"""
from __future__ import annotations

import contextlib
import importlib.util
import json
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import ModuleType, SimpleNamespace

import pytest
import torch

ROOT_VARIABLE = "VLPT_REFERENCE_ROOT"
REPORT_VARIABLE = "VLPT_REFERENCE_REPORT"
#: reference name -> its checkout (subfolder of the root) and the folder in it that holds the code
REPOSITORIES = {
    "CoOp": ("CoOp", "."),  # KaiyangZhou/CoOp, also CoCoOp
    "KgCoOp": ("KgCoOp", "KgCoOp"),  # htyao89/KgCoOp
    "MaPLe": ("multimodal-prompt-learning", "."),  # muzairkhattak/multimodal-prompt-learning
    "TPT": ("TPT", "."),  # azshue/TPT
}
#: prefix of the module names the reference code is imported under
PREFIX = "_vlpt_reference_"
#: fp32 agreement demanded by default: max |ours - reference| / max |reference|
TOLERANCE = 1e-4
#: the compared classes: "_" becomes a space, and the last token of "kite (bird of prey)" merges with
#: the prompt's period ("prey)." ends in the single token ").")
CLASSNAMES = ["kite (bird of prey)", "red_fox", "airplane", "golden retriever"]
TEMPLATES = ["a photo of a {}."]
INIT_PHRASE = "a photo of a"


def _module(name: str, **attributes) -> ModuleType:
    module = ModuleType(name)
    module.__dict__.update(attributes)
    return module


def _never_called(*args, **kwargs):
    raise NotImplementedError("a stand-in for the reference's framework: the differential test never calls it")


class _TrainerRegistry:
    """Dassl's TRAINER_REGISTRY: ``register()`` returns the class unchanged."""

    def register(self, *args, **kwargs):
        return lambda obj: obj


def framework_stand_ins() -> dict[str, ModuleType]:
    """Modules the reference files import for their trainers, which the test never runs."""
    import packaging.version

    return {
        "dassl": _module("dassl"),
        "dassl.engine": _module("dassl.engine", TRAINER_REGISTRY=_TrainerRegistry(), TrainerX=type("TrainerX", (), {})),
        "dassl.metrics": _module("dassl.metrics", compute_accuracy=_never_called),
        "dassl.utils": _module("dassl.utils", load_pretrained_weights=_never_called, load_checkpoint=_never_called),
        "dassl.optim": _module("dassl.optim", build_optimizer=_never_called, build_lr_scheduler=_never_called),
        # TPT's clip/clip.py compares torch's version with pkg_resources.packaging
        "pkg_resources": _module("pkg_resources", packaging=packaging),
    }


def _inside(module: ModuleType, folder: Path) -> bool:
    file = getattr(module, "__file__", None)
    return file is not None and Path(file).resolve().is_relative_to(folder)


def _exec_file(name: str, file: Path, alias: str | None = None) -> ModuleType:
    """Import ``file`` as module ``name``; with ``alias``, as a package also known by that name while it runs
    (TPT's clip/custom_clip.py imports ``from clip import load`` from inside the ``clip`` package)."""
    locations = [str(file.parent)] if alias else None
    spec = importlib.util.spec_from_file_location(name, file, submodule_search_locations=locations)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    if alias:
        sys.modules[alias] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module


class References:
    """The reference checkouts under one root folder, imported on demand and cached."""

    def __init__(self, root: Path):
        self.root = root.resolve()

    def code(self, repo: str) -> Path:
        """The folder holding ``repo``'s code; the test skips when its checkout is absent."""
        checkout, inner = REPOSITORIES[repo]
        folder = (self.root / checkout / inner).resolve()
        if not (folder / "clip" / "model.py").is_file():
            pytest.skip(f"reference {repo} is not checked out at {self.root / checkout}")
        return folder

    @contextlib.contextmanager
    def _importing(self, repo: str):
        """sys.path and sys.modules as ``repo``'s code expects them, restored afterwards."""
        code = self.code(repo)
        stand_ins = framework_stand_ins()

        def transient(name: str) -> bool:
            return name in stand_ins or name == "clip" or name.startswith("clip.")

        saved = {name: module for name, module in sys.modules.items() if transient(name)}
        sys.modules.update(stand_ins)
        sys.path.insert(0, str(code))
        try:
            package_name = f"{PREFIX}{repo}_clip"
            package = sys.modules.get(package_name) or _exec_file(package_name, code / "clip" / "__init__.py", "clip")
            sys.modules["clip"] = package
            for name, module in list(sys.modules.items()):
                if name.startswith(package_name + "."):
                    sys.modules["clip" + name[len(package_name):]] = module
            yield code
        finally:
            sys.path.remove(str(code))
            for name, module in list(sys.modules.items()):
                if transient(name) or (not name.startswith(PREFIX) and _inside(module, code)):
                    del sys.modules[name]
            sys.modules.update(saved)

    def module(self, repo: str, path: str) -> ModuleType:
        """The reference file ``path`` (relative to ``repo``'s code folder), imported once."""
        name = f"{PREFIX}{repo}_{Path(path).stem}"
        if name not in sys.modules:
            with self._importing(repo) as code:
                _exec_file(name, code / path)
        return sys.modules[name]

    def clip(self, repo: str) -> ModuleType:
        """``repo``'s own ``clip`` package."""
        with self._importing(repo):
            return sys.modules[f"{PREFIX}{repo}_clip"]


def reference_config(**sections) -> SimpleNamespace:
    """A yacs-like config: ``reference_config(TRAINER={"COOP": {"N_CTX": 4}})`` reads ``cfg.TRAINER.COOP.N_CTX``."""
    return SimpleNamespace(**{k: reference_config(**v) if isinstance(v, dict) else v for k, v in sections.items()})


def freeze_except(model: torch.nn.Module, learned) -> None:
    """Gradients only for parameters whose name satisfies ``learned``, as the reference trainers set them."""
    for name, parameter in model.named_parameters():
        parameter.requires_grad_(bool(learned(name)))


def dassl_sgd(parameters, lr: float) -> torch.optim.SGD:
    """The optimizer Dassl's ``build_optimizer`` makes for ``OPTIM.NAME: sgd`` with its default settings."""
    return torch.optim.SGD(parameters, lr=lr, momentum=0.9, weight_decay=5e-4, dampening=0, nesterov=False)


def one_training_step(check: "Comparison", parameters, reference_loss, our_loss, reference_optimizer,
                      our_optimizer) -> None:
    """Compare the loss, the gradients and one optimizer step; ``parameters`` pairs ``(name, reference, ours)``."""
    losses = reference_loss(), our_loss()
    check("loss", *losses)
    for optimizer, loss in zip((reference_optimizer, our_optimizer), losses):
        optimizer.zero_grad()
        loss.backward()
    before = [(reference.detach().clone(), ours.detach().clone()) for _, reference, ours in parameters]
    for name, reference, ours in parameters:
        check(f"gradient {name}", reference.grad, ours.grad)
    reference_optimizer.step()
    our_optimizer.step()
    for (name, reference, ours), (reference_before, ours_before) in zip(parameters, before):
        check(f"after one step {name}", reference, ours)
        update = reference.detach() - reference_before
        # an update is the difference of two fp32 parameters: allow the rounding of the larger, 1 ulp
        rounding = torch.finfo(torch.float32).eps * reference_before.abs().max() / update.abs().max().clamp(min=1e-30)
        check(f"update {name}", update, ours.detach() - ours_before, tolerance=max(TOLERANCE, 2 * rounding.item()))


@dataclass
class Row:
    """One compared quantity: its differences and whether they are within tolerance."""

    method: str
    case: str
    quantity: str
    max_abs: float | None
    max_rel: float | None
    tolerance: float
    agrees: bool
    note: str = ""


@dataclass
class Comparison:
    """The compared quantities of one method and case; ``assert_agreement`` lists every disagreement."""

    method: str
    case: str
    rows: list[Row] = field(default_factory=list)

    def __call__(self, quantity: str, reference, ours, tolerance: float = TOLERANCE) -> None:
        """Record ``ours`` against ``reference``: max abs difference, and that over max |reference|."""
        if reference is None or ours is None:
            note = f"reference {'no ' * (reference is None)}value, vlpt {'no ' * (ours is None)}value"
            self.rows.append(Row(self.method, self.case, quantity, None, None, tolerance, False, note))
            return
        reference, ours = (torch.as_tensor(t).detach().double() for t in (reference, ours))
        if reference.shape != ours.shape:
            note = f"shapes differ: reference {tuple(reference.shape)}, vlpt {tuple(ours.shape)}"
            self.rows.append(Row(self.method, self.case, quantity, None, None, tolerance, False, note))
            return
        max_abs = (ours - reference).abs().max().item() if reference.numel() else 0.0
        scale = reference.abs().max().item() if reference.numel() else 0.0
        max_rel = max_abs / scale if scale else (0.0 if max_abs == 0 else float("inf"))
        self.rows.append(Row(self.method, self.case, quantity, max_abs, max_rel, tolerance, max_rel <= tolerance))

    def assert_agreement(self) -> None:
        failed = [r for r in self.rows if not r.agrees]
        assert not failed, f"{self.method} ({self.case}) differs from the reference in:\n" + "\n".join(
            f"  {r.quantity}: " + (r.note if r.max_rel is None else f"max abs {r.max_abs:.3g}, max rel {r.max_rel:.3g} "
                                   f"> {r.tolerance:g}") for r in failed)


class DifferenceTable:
    """Every comparison of a session; written as JSON rows when ``$VLPT_REFERENCE_REPORT`` names a file."""

    def __init__(self):
        self.comparisons: list[Comparison] = []

    def comparison(self, method: str, case: str = "default") -> Comparison:
        self.comparisons.append(Comparison(method, case))
        return self.comparisons[-1]

    def write(self, path: Path) -> None:
        rows = [asdict(row) for comparison in self.comparisons for row in comparison.rows]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(rows, indent=1) + "\n")


def markdown_table(rows: list[dict]) -> str:
    """Per method and quantity, the largest differences over the cases that agree; the others are listed."""
    table: dict[tuple[str, str], dict] = {}
    for row in rows:
        entry = table.setdefault((row["method"], row["quantity"]), {"abs": None, "rel": None, "disagreeing": []})
        if row["agrees"]:
            entry["abs"] = max(entry["abs"] or 0.0, row["max_abs"])
            entry["rel"] = max(entry["rel"] or 0.0, row["max_rel"])
        else:
            found = row["note"] if row["max_rel"] is None else f"max rel {row['max_rel']:.2g}"
            entry["disagreeing"].append(f"{row['case']}: {found}")
    lines = ["| method | quantity | max abs | max rel | disagreeing cases |", "|---|---|---|---|---|"]
    for (method, quantity), entry in table.items():
        numbers = [f"{value:.2g}" if value is not None else "-" for value in (entry["abs"], entry["rel"])]
        lines.append(f"| {method} | {quantity} | {' | '.join(numbers)} | {'; '.join(entry['disagreeing'])} |")
    return "\n".join(lines)


if __name__ == "__main__":
    print(markdown_table(json.loads(Path(sys.argv[1]).read_text())))
