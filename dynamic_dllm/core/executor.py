"""The partial-layer executor: one forward pass that recomputes only chosen rows per layer.

Per layer ``l`` it keeps, for every position: K and V (before RoPE, so positions stay explicit),
the attention-block output A (after the output projection) and the FFN output F; beside K it keeps
RoPE(K) at the row's position (positions are fixed within a generation), updated for exactly the
rows whose K is rewritten, so a step rotates only the keys it recomputes. For the row set
``U_l`` chosen for the step it computes, with ``x`` the current residual stream::

    xn_U = n1(x_U);  Q_U, K_U, V_U = proj(xn_U);  K[U], V[U] <- K_U, V_U
    A[U] <- O(Attn(RoPE(Q_U, pos_U), RoPE(K, pos), V))       # queries U against all keys
    h = x + A                                                 # every row: fresh or cached A
    F[U] <- FFN(n2(h_U))
    x <- h + F

Rows outside ``U_l`` reuse their cached A and F but add them to their *current* residual stream,
so a stale row still moves when its input moves (dLLM-Cache / Dynamic-dLLM semantics). With
``U_l`` = all rows this is exactly the plain forward.

Key subsets (optional): ``keys_fn(layer, ctx)`` may return a bool ``[B, L]`` keep-mask; the layer's
attention (every query it computes, dense or partial) then sees only kept keys (intersected with the
padding mask; ``ctx.key_mask`` holds the result). Cached K/V of dropped keys stay in the cache.
None, or a mask keeping every valid key, is exactly the default. Sparse-dLLM evicts K/V this way,
scoring keys with :meth:`LayerContext.key_importance`. Everything is batched: a row set is a bool
``[B, L]`` turned into a padded index ``[B, R]`` for gather/scatter.
"""

from __future__ import annotations

from typing import Callable, Optional

import torch
import torch.nn.functional as F

from ..models.base import DecoderModel, LayerParts, apply_rope, attention, rope_cos_sin


def mask_to_index(rows: torch.Tensor) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
    """Bool ``[B, L]`` → (index ``[B, R]``, writable ``[B, R]``) with R = max row count.

    The first ``count_b`` entries of row b are its selected positions (ascending). Padding entries
    repeat the row's first selected position (writing identical values twice is harmless); in a row
    with no selection they point at position 0 and are marked not writable. ``writable`` is None
    when every batch row has a selection (every entry writable).
    """
    counts = rows.sum(1)
    lo, R = (int(c) for c in counts.aminmax())
    order = torch.argsort((~rows).to(torch.int8), dim=1, stable=True)[:, :R]
    if lo == R:  # same count in every row: no padding entries
        return order, None
    in_range = torch.arange(R, device=rows.device) < counts[:, None]
    index = torch.where(in_range, order, order[:, :1])
    writable = None if lo > 0 else (counts > 0)[:, None].expand(-1, R)
    return index, writable


def _gather(t: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """``t[b, index[b, r], ...]`` for ``t`` ``[B, L, ...]`` → ``[B, R, ...]``."""
    idx = index.view(*index.shape, *([1] * (t.dim() - 2))).expand(*index.shape, *t.shape[2:])
    return t.gather(1, idx)


def _scatter(t: torch.Tensor, index: torch.Tensor, writable: Optional[torch.Tensor], values: torch.Tensor) -> None:
    """In place: ``t[b, index[b, r]] = values[b, r]`` where writable (None: everywhere), unchanged elsewhere."""
    idx = index.view(*index.shape, *([1] * (t.dim() - 2))).expand(*index.shape, *t.shape[2:])
    values = values.to(t.dtype)
    if writable is not None:
        w = writable.view(*writable.shape, *([1] * (values.dim() - 2)))
        values = torch.where(w, values, _gather(t, index))
    t.scatter_(1, idx, values)


class LayerContext:
    """What a cache policy may look at when choosing rows for one layer.

    ``hidden`` is the layer's input (residual stream) ``[B, L, d]`` this step. :meth:`normed` and
    :meth:`values` are computed on demand for all rows and reused by the executor (so asking costs
    nothing extra for rows that are recomputed anyway).
    """

    def __init__(self, executor: "PartialLayerExecutor", layer: int, hidden: torch.Tensor):
        self.executor = executor
        self.layer = layer
        self.hidden = hidden
        self._normed: Optional[torch.Tensor] = None
        self.fresh_values: Optional[torch.Tensor] = None
        #: fresh pre-RoPE K of all rows (see :meth:`keys`), reused by a dense layer
        self.fresh_keys: Optional[torch.Tensor] = None
        #: key mask the layer's attention uses (padding ∧ the ``keys_fn`` answer); None = all keys
        self.key_mask: Optional[torch.Tensor] = executor.key_valid
        #: rows where ``fresh_values`` is fresh (bool ``[B, L]``); None = every row (see :meth:`values`)
        self.fresh_value_rows: Optional[torch.Tensor] = None

    @property
    def parts(self) -> LayerParts:
        return self.executor.parts[self.layer]

    def normed(self) -> torch.Tensor:
        """``n1(hidden)`` for all rows ``[B, L, d]`` — the normalised layer input."""
        if self._normed is None:
            self._normed = self.parts.attn_norm(self.hidden)
        return self._normed

    def values(self, rows: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Fresh V ``[B, L, kv_dim]`` for all rows. Calling it makes the executor overwrite this
        layer's whole V cache with these values (dLLM-Cache's rule); counted in the FLOP stats.

        With ``rows`` (bool ``[B, L]``) V is projected only for those rows: the result holds fresh V
        there and the cached V elsewhere, and only those rows of the V cache are overwritten (the
        FLOP stats count only them). Before the first step (no cache) every row is computed. A later
        call asking for rows not yet fresh recomputes the union."""
        ex = self.executor
        if rows is not None and (not ex.ready or bool(rows.all())):
            rows = None
        if self.fresh_values is not None:
            have = self.fresh_value_rows
            if have is None or (rows is not None and not bool((rows & ~have).any())):
                return self.fresh_values
            rows = None if rows is None else rows | have
        if rows is None:
            self.fresh_values = self.parts.v_proj(self.normed())
            self.fresh_value_rows = None
            n_rows = self.hidden.shape[0] * self.hidden.shape[1]
        else:
            index, writable = mask_to_index(rows)
            merged = self.cached_values().clone()
            _scatter(merged, index, writable, self.parts.v_proj(_gather(self.normed(), index)))
            self.fresh_values, self.fresh_value_rows = merged, rows
            n_rows = index.numel()
        ex.extra_flops += 2 * n_rows * ex.model.d_model * ex.model.kv_dim
        return self.fresh_values

    def keys(self) -> torch.Tensor:
        """Fresh pre-RoPE K ``[B, L, kv_dim]`` for all rows from this step's layer input. Unlike
        :meth:`values` it does not change what the layer writes to the cache; a dense (all-rows)
        layer reuses it, otherwise its FLOPs are counted as extra."""
        if self.fresh_keys is None:
            self.fresh_keys = self.parts.k_proj(self.normed())
        return self.fresh_keys

    def key_importance(self, query_rows: torch.Tensor) -> torch.Tensor:
        """Importance ``[B, L]`` of every key position for the queries at ``query_rows`` (bool
        ``[B, L]``): the mean over those query rows and over the query heads of the raw dot product
        ``RoPE(q_i) . RoPE(k_j)`` (no scaling, no softmax; with GQA each K head is scored by its group
        of query heads), all from this step's layer input (Sparse-dLLM's eviction score). Rows of the
        batch with no query row score 0. Counted in the FLOP stats."""
        ex, m = self.executor, self.executor.model
        B, L, _ = self.hidden.shape
        H, Hkv, D = m.n_heads, m.n_kv_heads, m.head_dim
        index, _ = mask_to_index(query_rows)
        counts = query_rows.sum(1)
        q = ex._heads(self.parts.q_proj(_gather(self.normed(), index)), H)
        q = apply_rope(q, _gather(ex.cos, index), _gather(ex.sin, index), m.rope_full_precision)
        in_range = torch.arange(index.shape[1], device=index.device) < counts[:, None]
        weight = in_range.to(q.dtype) / counts.clamp(min=1)[:, None].to(q.dtype)
        mean_q = (q * weight[:, :, None, None]).sum(1)  # [B, H, D]
        per_kv_head = mean_q.view(B, Hkv, H // Hkv, D).sum(2) / H   # query heads h // (H // Hkv) share K head
        k = apply_rope(ex._heads(self.keys(), Hkv), ex.cos, ex.sin, m.rope_full_precision)
        ex.extra_flops += 2 * index.numel() * m.d_model * m.d_model + 2 * B * L * m.kv_dim
        return torch.einsum("bgd,blgd->bl", per_kv_head, k)

    def cached_values(self) -> Optional[torch.Tensor]:
        """This layer's V cache ``[B, L, kv_dim]`` as left by the previous step (None before the first)."""
        v = self.executor.v
        return None if v is None else v[self.layer].flatten(2)

    def cached_keys(self) -> Optional[torch.Tensor]:
        """This layer's (pre-RoPE) K cache ``[B, L, kv_dim]`` as left by the previous step."""
        k = self.executor.k
        return None if k is None else k[self.layer].flatten(2)


RowsFn = Callable[[int, LayerContext], Optional[torch.Tensor]]
KeysFn = Callable[[int, LayerContext], Optional[torch.Tensor]]


class PartialLayerExecutor:
    """Runs ``model`` over a fixed canvas geometry, holding the per-layer caches between steps.

    ``valid`` ``[B, L]`` marks real tokens (False on left padding); ``positions`` ``[B, L]`` are the
    RoPE positions. The caches are allocated on the first (necessarily full) forward.
    """

    def __init__(self, model: DecoderModel, valid: torch.Tensor, positions: torch.Tensor):
        self.model = model
        self.parts = [model.layer(i) for i in range(model.n_layers)]
        self.key_valid = None if bool(valid.all()) else valid
        self.cos, self.sin = rope_cos_sin(positions, model.head_dim, model.rope_theta)
        B, L = valid.shape
        self.shape = (B, L)
        self.k = self.v = self.attn = self.ffn = None
        self.rows_per_layer = torch.zeros(model.n_layers, dtype=torch.long, device=valid.device)
        self.extra_flops = 0
        self.row_flops = model.layer_flops(1, L)

    @property
    def ready(self) -> bool:
        return self.k is not None

    def _allocate(self, dtype: torch.dtype, device) -> None:
        m, (B, L) = self.model, self.shape
        self.k = torch.zeros(m.n_layers, B, L, m.n_kv_heads, m.head_dim, dtype=dtype, device=device)
        self.k_rot = torch.zeros_like(self.k)  # RoPE(K) at each row's fixed position, kept in step with K
        self.v = torch.zeros_like(self.k)
        self.attn = torch.zeros(m.n_layers, B, L, m.d_model, dtype=dtype, device=device)
        self.ffn = torch.zeros_like(self.attn)

    @torch.no_grad()
    def forward(self, tokens: torch.Tensor, rows_fn: Optional[RowsFn], full: bool, head_start: int, head_end: int,
                keys_fn: Optional[KeysFn] = None) -> torch.Tensor:
        """One step. ``rows_fn(layer, ctx)`` gives the bool ``[B, L]`` rows to recompute (None or
        no rows = reuse everything); ``full`` (or an empty cache) recomputes every row of every
        layer. ``keys_fn(layer, ctx)`` (called after ``rows_fn``) optionally gives the bool ``[B, L]``
        keys the layer's attention may use (None = all). Returns logits ``[B, head_end - head_start, V]``
        of hidden rows [head_start, head_end)."""
        x = self.model.embed(tokens)
        full = full or not self.ready
        if not self.ready:
            self._allocate(x.dtype, x.device)
        B, L = self.shape
        for i in range(self.model.n_layers):
            ctx = LayerContext(self, i, x)
            rows = rows_fn(i, ctx) if rows_fn is not None else None
            if keys_fn is not None:
                ctx.key_mask = self._key_mask(keys_fn(i, ctx))
            dense = full or (rows is not None and bool(rows.all()))
            if ctx.fresh_keys is not None and not dense:  # asked for by a policy, not reused
                self.extra_flops += 2 * B * L * self.model.d_model * self.model.kv_dim
            if dense:
                x = self._dense_layer(i, ctx)
                self.rows_per_layer[i] += B * L
            elif rows is None or not bool(rows.any()):
                if ctx.fresh_values is not None:
                    self.v[i] = ctx.fresh_values.view_as(self.v[i])
                x = x + self.attn[i] + self.ffn[i]
            else:
                x = self._partial_layer(i, ctx, rows)
                self.rows_per_layer[i] += rows.sum()
        h = x[:, head_start:head_end]
        return self.model.head(self.model.final_norm(h))

    def _key_mask(self, keep: Optional[torch.Tensor]) -> Optional[torch.Tensor]:
        """Padding mask ∧ ``keep``; the padding mask itself (None without padding) when ``keep``
        drops no valid key, so such an answer runs exactly the default attention."""
        base = self.key_valid
        if keep is None:
            return base
        mask = keep if base is None else keep & base
        if (base is None and bool(mask.all())) or (base is not None and torch.equal(mask, base)):
            return base
        return mask

    def _heads(self, t: torch.Tensor, n: int) -> torch.Tensor:
        return t.view(*t.shape[:2], n, self.model.head_dim)

    def _ffn(self, p: LayerParts, h: torch.Tensor) -> torch.Tensor:
        hn = p.ffn_norm(h)
        return p.down_proj(F.silu(p.gate_proj(hn)) * p.up_proj(hn))

    def _dense_layer(self, i: int, ctx: LayerContext) -> torch.Tensor:
        m, p, x = self.model, self.parts[i], ctx.hidden
        xn = ctx.normed()
        q = apply_rope(self._heads(p.q_proj(xn), m.n_heads), self.cos, self.sin, m.rope_full_precision)
        k = self._heads(ctx.fresh_keys if ctx.fresh_keys is not None else p.k_proj(xn), m.n_kv_heads)
        fresh_all = ctx.fresh_values is not None and ctx.fresh_value_rows is None
        v = self._heads(ctx.fresh_values if fresh_all else p.v_proj(xn), m.n_kv_heads)
        self.k[i], self.v[i] = k, v
        self.k_rot[i] = apply_rope(k, self.cos, self.sin, m.rope_full_precision)
        self.attn[i] = p.o_proj(attention(q, self.k_rot[i], v, ctx.key_mask))
        h = x + self.attn[i]
        self.ffn[i] = self._ffn(p, h)
        return h + self.ffn[i]

    def _partial_layer(self, i: int, ctx: LayerContext, rows: torch.Tensor) -> torch.Tensor:
        m, p, x = self.model, self.parts[i], ctx.hidden
        index, writable = mask_to_index(rows)
        xn = _gather(ctx._normed, index) if ctx._normed is not None else p.attn_norm(_gather(x, index))
        cos, sin = _gather(self.cos, index), _gather(self.sin, index)
        q = apply_rope(self._heads(p.q_proj(xn), m.n_heads), cos, sin, m.rope_full_precision)
        if ctx.fresh_values is not None:
            self.v[i] = ctx.fresh_values.view_as(self.v[i])
        k = self._heads(p.k_proj(xn), m.n_kv_heads)
        _scatter(self.k[i], index, writable, k)
        _scatter(self.k_rot[i], index, writable, apply_rope(k, cos, sin, m.rope_full_precision))  # only rows U rotate
        _scatter(self.v[i], index, writable, self._heads(p.v_proj(xn), m.n_kv_heads))
        _scatter(self.attn[i], index, writable, p.o_proj(attention(q, self.k_rot[i], self.v[i], ctx.key_mask)))
        h = x + self.attn[i]
        _scatter(self.ffn[i], index, writable, self._ffn(p, _gather(h, index)))
        return h + self.ffn[i]

    def recompute_fraction(self, n_steps: int) -> float:
        """FLOPs spent in the layers / FLOPs of ``n_steps`` full forwards."""
        B, L = self.shape
        full = n_steps * self.model.n_layers * B * L * self.row_flops
        spent = int(self.rows_per_layer.sum()) * self.row_flops + self.extra_flops
        return spent / full if full else 0.0
