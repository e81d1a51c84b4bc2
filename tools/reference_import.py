"""Shared by the reference-recording tools: import a reference repository's modeling files from
where they lie, through a temporary package (nothing is copied into this project), and compare a
fresh run with a recorded one."""

from __future__ import annotations

import importlib
import shutil
import sys
import tempfile
from pathlib import Path


def import_copied(folder: Path, files: tuple, package: str, module: str, stand_ins: dict | None = None):
    """``package.module`` from ``files`` of ``folder`` copied into a temporary package ``package``
    (the reference files import each other relatively, so they need a package of their own);
    ``stand_ins`` maps further module file names to source text written beside them (for a
    sibling module the reference imports but the run does not use, e.g. a training-only kernel)."""
    pkg = Path(tempfile.mkdtemp(prefix=f"{package}_")) / package
    pkg.mkdir()
    for name in files:
        shutil.copy(Path(folder) / name, pkg / name)
    for name, text in (stand_ins or {}).items():
        (pkg / name).write_text(text)
    (pkg / "__init__.py").write_text("")
    sys.path.insert(0, str(pkg.parent))
    return importlib.import_module(f"{package}.{module}")


def report(name: str, result, recorded: dict | None, summary: str) -> bool:
    """Print one line for a case — ``same`` / ``DIFFERENT`` against ``recorded["cases"]`` with
    ``--check``, else ``summary`` — and return whether it differs."""
    if recorded is None:
        print(f"{name}: {summary}", flush=True)
        return False
    same = recorded["cases"].get(name) == result
    print(f"{'same' if same else 'DIFFERENT':>9}  {name}", flush=True)
    return not same


def logits_record(input_ids, logits) -> dict:
    """A logits case as recorded: the ids ``[L]`` and the logits ``[L, V]`` rounded to 1e-6."""
    return {"input_ids": input_ids.tolist(), "logits": [[round(v, 6) for v in row] for row in logits.tolist()]}


def report_logits(name: str, result: dict, recorded: dict | None) -> bool:
    """:func:`report` for a :func:`logits_record` case: with ``--check`` the ids must be equal and the
    logits within 1e-5 (a fresh run on another machine may differ in the last bits)."""
    import torch

    if recorded is None:
        print(f"{name}: {len(result['logits'])} x {len(result['logits'][0])}", flush=True)
        return False
    want = recorded["cases"][name]
    same = result["input_ids"] == want["input_ids"] and bool(
        torch.allclose(torch.tensor(result["logits"]), torch.tensor(want["logits"]), atol=1e-5))
    print(f"{'same' if same else 'DIFFERENT':>9}  {name}", flush=True)
    return not same
