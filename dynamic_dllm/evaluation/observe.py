"""Rows computed per step and layer, as fractions (for the recompute heatmap).

The executor records, for every forward, the rows it computed per layer (``GenerationStats.
rows_per_step``, summed over the batch; a full step counts ``B * L``). Summed over steps they
equal :attr:`GenerationStats.recomputed_rows`.
"""

from __future__ import annotations

import torch


def recompute_fractions(stats) -> torch.Tensor:
    """``[n_layers, steps]`` fraction of the canvas's rows computed at each step and layer. The
    first forward of a generation is always full, so its count is ``B * L``."""
    rows = torch.tensor(stats.rows_per_step, dtype=torch.float64).T
    return rows / rows[0, 0]
