"""Every cache × unmask pair of the golden matrix gives the recorded tokens, NFE and per-step
commit counts (``tests/golden_matrix.py``; recorded before the engine-v2 refactor)."""

from __future__ import annotations

import json

from golden_matrix import GOLDEN, run_matrix


def test_golden_record_unchanged():
    expected = json.loads(GOLDEN.read_text())
    got = run_matrix()
    assert sorted(got) == sorted(expected)
    differing = [key for key in expected if got[key] != expected[key]]
    assert not differing, f"{len(differing)} of {len(expected)} entries differ, e.g. {differing[:5]}"
