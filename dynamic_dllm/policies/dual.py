"""Cache policy ``dual`` — Fast-dLLM (v1) DualCache.

Source: Wu et al., *Fast-dLLM* (arXiv 2505.22618), ``generate_with_dual_cache`` in
NVlabs/Fast-dLLM ``llada/generate.py`` (``replace_position`` path of the attention).

Rule, per block:

* step 0 of the block is a **full step** (every row of every layer; all K/V refreshed) whose logits
  also decode that step — one NFE;
* every later step recomputes only the current block's rows in every layer; the prefix's *and* the
  masked suffix's K/V come from the block-start refresh (the block's own K/V are rewritten each
  step, as Fast-dLLM writes them in place into the cached tensors).

Dream (``logit_shift`` 1): the recomputed rows are ``[block_start − 1, block_end)`` — the rows whose
logits decode the block (``[block_start − 1, block_end − 1)``) united with the rows whose tokens
change (``[block_start, block_end)``); see :mod:`dynamic_dllm.policies.prefix`. LLaDA:
``[block_start, block_end)``.

Recompute accounting: with ``S`` steps per block, block length ``b``, canvas length ``L`` and every
block taking ``S`` steps, ``recompute_fraction = (L + (S − 1)(b + logit_shift)) / (S · L)``.
"""

from __future__ import annotations

import attrs

from .prefix import PrefixCache


@attrs.define
class DualCache(PrefixCache):
    """Fast-dLLM DualCache: full forward at each block start, then recompute only the current block.

    Prefix and suffix K/V are reused from the block-start refresh."""

    exact_for_waiting_rows = True

    to_end = False
