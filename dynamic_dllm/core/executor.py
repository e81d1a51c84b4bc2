"""The partial-layer executor: one forward pass that recomputes only chosen rows per layer.

Per layer ``l`` it keeps, for every position: RoPE(K) at the row's position (positions are fixed
within a generation, so the rotated key is all attention needs; a step rotates only the keys it
recomputes), V, the attention-block output A (after the output projection) and the FFN output F. For the row set
``U_l`` chosen for the step it computes, with ``x`` the current residual stream::

    xn_U = n1(x_U);  Q_U, K_U, V_U = proj(xn_U);  Kr[U], V[U] <- RoPE(K_U, pos_U), V_U
    A[U] <- O(Attn(RoPE(Q_U, pos_U), Kr, V))                   # queries U against all keys
    h = x + A                                                 # every row: fresh or cached A
    F[U] <- FFN(n2(h_U))
    x <- h + F

Rows outside ``U_l`` reuse their cached A and F but add them to their *current* residual stream,
so a stale row still moves when its input moves (dLLM-Cache / Dynamic-dLLM semantics). With
``U_l`` = all rows this is exactly the plain forward.

``U_l`` is a :class:`~dynamic_dllm.core.rows.RowSet` whose size is a host int: a span is sliced,
an index is gathered and scattered. Every cache has one extra row ``L`` where the unwritable
(padding) entries of an index are written and never read — so nothing in the layer loop needs a
device→host sync. With no cache policy that reuses the cache, no cache is kept at all (plain forward).

The residual stream is written into buffers allocated once per generation (two for the layer
inputs, alternating, one for ``h``), not into a fresh tensor per add: on a CPU a fresh multi-MB
tensor is fresh memory, and its page faults cost as much as the add. So ``LayerContext.hidden`` is
valid during the layer's policy calls only; a policy keeping a layer input across layers or steps
must copy it (DCU keeps its own buffers).

Key subsets (optional): a bool ``[B, L]`` keep-mask per layer (``keys_fn``); the layer's attention
(every query it computes, dense or partial) then sees only kept keys, intersected with the padding
mask. Cached K/V of dropped keys stay in the cache. Sparse-dLLM evicts K/V this way, scoring keys
with :meth:`LayerContext.key_importance`.
"""

from __future__ import annotations

from typing import Callable, Optional, Sequence

import torch

from .architecture import DecoderModel, LayerParts, Rotary, attention, block_causal_mask, ffn, key_heads, query_heads
from .rows import RowSet, union


class LayerContext:
    """What a cache policy may look at when choosing rows for one layer.

    ``hidden`` is the layer's input (residual stream) ``[B, L, d]`` this step. :meth:`normed` and
    :meth:`values` are computed on demand for all rows and reused by the executor (so asking costs
    nothing extra for rows that are recomputed anyway).
    """

    def __init__(self, executor: "PartialLayerExecutor", layer: int, hidden: torch.Tensor,
                 upstream: Optional[RowSet] = None, hidden_rows: Optional[torch.Tensor] = None):
        self.executor = executor
        self.layer = layer
        self.hidden = hidden
        #: ``hidden`` as ``[B·L, d]`` (a view the executor keeps per buffer; None: made on demand)
        self.hidden_rows = hidden_rows
        #: the rows the previous layer recomputed this step (None: none, or this is layer 0; a span
        #: covering every row: that layer was dense). A row outside every earlier layer's set and
        #: whose token did not change has, bit for bit, the layer input of the previous step: its
        #: cached A and F and its input all are the previous step's, and the adds are elementwise.
        self.upstream = upstream
        self._normed: Optional[torch.Tensor] = None
        self.fresh_values: Optional[torch.Tensor] = None
        #: fresh pre-RoPE K of all rows (see :meth:`keys`), reused by a dense layer
        self.fresh_keys: Optional[torch.Tensor] = None
        #: key mask the layer's attention uses (padding ∧ the ``keys_fn`` answer); None = all keys
        self.key_mask: Optional[torch.Tensor] = executor.key_valid
        #: rows where ``fresh_values`` is fresh; None = every row (see :meth:`values`)
        self.fresh_value_rows: Optional[RowSet] = None

    @property
    def parts(self) -> LayerParts:
        return self.executor.parts[self.layer]

    def normed(self) -> torch.Tensor:
        """``n1(hidden)`` for all rows ``[B, L, d]`` — the normalised layer input."""
        if self._normed is None:
            self._normed = self.parts.attn_norm(self.hidden)
        return self._normed

    def cosine_input(self, out: Optional[torch.Tensor] = None) -> torch.Tensor:
        """A tensor whose row-wise cosine between steps equals that of :meth:`normed`, as cheap as
        the norm allows: the norm's ``scale_free(x)`` when it has one (RMSNorm: ``w ⊙ x``, written
        into ``out`` if given), else a copy of :meth:`normed` (into ``out`` if given). The result is
        the caller's to keep."""
        scale_free = getattr(self.parts.attn_norm, "scale_free", None)
        if scale_free is not None:
            return scale_free(self.hidden, out=out)
        return self.normed().clone() if out is None else out.copy_(self.normed())

    def flat_hidden(self) -> torch.Tensor:
        """``hidden`` as ``[B·L, d]`` (a view)."""
        if self.hidden_rows is None:
            self.hidden_rows = self.hidden.reshape(-1, self.hidden.shape[-1])
        return self.hidden_rows

    def cosine_rows(self, flat: torch.Tensor) -> torch.Tensor:
        """:meth:`cosine_input` of the rows ``flat`` of the row-flattened canvas (``b·L + i``), ``[R, d]``."""
        rows = self.flat_hidden().index_select(0, flat)
        scale_free = getattr(self.parts.attn_norm, "scale_free", None)
        return scale_free(rows, out=rows) if scale_free is not None else self.parts.attn_norm(rows)

    def values(self, rows: Optional[RowSet] = None) -> torch.Tensor:
        """Fresh V ``[B, L, kv_dim]``. Calling it makes the executor overwrite this layer's V cache
        with the result (dLLM-Cache's rule); counted in the FLOP stats.

        With ``rows`` V is projected only there: the result holds fresh V on those rows and the
        cached V elsewhere. Before the first step (no cache) every row is computed. A second call
        with other rows projects the union of both requests."""
        ex = self.executor
        B, L, _ = self.hidden.shape
        if rows is not None and (not ex.ready or rows.covers(L)):
            rows = None
        if self.fresh_values is not None:
            if self.fresh_value_rows is None or rows is self.fresh_value_rows:
                return self.fresh_values
            rows = None if rows is None else union([self.fresh_value_rows, rows], B, L, self.hidden.device)
            rows = None if rows is not None and rows.covers(L) else rows
            self.fresh_values = None
        if rows is None:
            self.fresh_values = self.parts.v_proj(self.normed())
            n_rows = B * L
        elif rows.is_span:
            s, e = rows.start, rows.start + rows.size
            merged = self.cached_values().clone()
            merged[:, s:e] = self.parts.v_proj(self.normed()[:, s:e])
            self.fresh_values, n_rows = merged, B * rows.size
        else:
            merged = torch.cat([self.cached_values(), self.cached_values()[:, :1]], 1)  # row L: discarded writes
            fresh = self.parts.v_proj(self.normed().gather(1, rows.read_index(self.hidden)))
            merged.scatter_(1, rows.write_index(fresh, L), fresh)
            self.fresh_values, n_rows = merged[:, :L], B * rows.size
        self.fresh_value_rows = rows
        ex.extra_flops += 2 * n_rows * ex.model.d_model * ex.model.kv_dim
        return self.fresh_values

    def keys(self) -> torch.Tensor:
        """Fresh pre-RoPE K ``[B, L, kv_dim]`` for all rows from this step's layer input. Unlike
        :meth:`values` it does not change what the layer writes to the cache; a dense (all-rows)
        layer reuses it, otherwise its FLOPs are counted as extra."""
        if self.fresh_keys is None:
            self.fresh_keys = self.parts.k_proj(self.normed())
        return self.fresh_keys

    def key_importance(self, query_rows: RowSet) -> torch.Tensor:
        """Importance ``[B, L]`` of every key position for the queries ``query_rows``: the mean
        over those query rows and over the query heads of the raw dot product
        ``RoPE(q_i) . RoPE(k_j)`` (no scaling, no softmax; with GQA each K head is scored by its group
        of query heads), all from this step's layer input (Sparse-dLLM's eviction score). Rows of the
        batch with no query row score 0. Counted in the FLOP stats."""
        ex, m = self.executor, self.executor.model
        B, L, _ = self.hidden.shape
        H, Hkv, D = m.n_heads, m.n_kv_heads, m.head_dim
        index = query_rows.positions(B, self.hidden.device)
        rope, rope_read = ex.rope, query_rows.read_index(ex.rope.cos)
        q = rope.rotate(query_heads(self.parts, self.parts.q_proj(self.normed().gather(1, query_rows.read_index(self.hidden))), H, D),
                        rope.cos.gather(1, rope_read), rope.sin.gather(1, rope_read))
        in_range = (torch.ones(index.shape, dtype=torch.bool, device=index.device) if query_rows.writable is None
                    else query_rows.writable)
        weight = in_range.to(q.dtype) / in_range.sum(1).clamp(min=1)[:, None].to(q.dtype)
        mean_q = (q * weight[:, :, None, None]).sum(1)  # [B, H, D]
        per_kv_head = mean_q.view(B, Hkv, H // Hkv, D).sum(2) / H   # query heads h // (H // Hkv) share K head
        k = rope.rotate(key_heads(self.parts, self.keys(), Hkv, D), rope.cos, rope.sin)
        ex.extra_flops += 2 * index.numel() * m.d_model * m.d_model + 2 * B * L * m.kv_dim
        return torch.einsum("bgd,blgd->bl", per_kv_head, k)

    def cached_values(self) -> Optional[torch.Tensor]:
        """This layer's V cache ``[B, L, kv_dim]`` as left by the previous step (None before the first)."""
        return self.executor.cached(self.executor.v, self.layer)

    def cached_rotated_keys(self) -> Optional[torch.Tensor]:
        """This layer's key cache ``RoPE(K)`` (rotated at each row's position) ``[B, L, kv_dim]`` as
        left by the previous step; compare with ``RoPE(keys())``, not with :meth:`keys`."""
        return self.executor.cached(self.executor.k_rot, self.layer)


def project(p: LayerParts, xn: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, rope: Rotary, heads: tuple,
            k_given: Optional[torch.Tensor] = None, v_given: Optional[torch.Tensor] = None) -> tuple:
    """Q, RoPE(K), V ``[..., H | Hkv, D]`` of normalised rows ``xn`` ``[..., d]`` at angles
    ``cos``/``sin`` ``[..., 1, D]``; ``k_given`` / ``v_given`` (pre-RoPE K, V of the same rows,
    already projected by a policy) are used instead of projecting again. ``heads`` = (H, Hkv, D)."""
    H, Hkv, D = heads
    lead = xn.shape[:-1]
    q = rope.rotate(query_heads(p, p.q_proj(xn), H, D), cos, sin)
    k = rope.rotate(key_heads(p, k_given if k_given is not None else p.k_proj(xn), Hkv, D), cos, sin)
    v = (v_given if v_given is not None else p.v_proj(xn)).view(*lead, Hkv, D)
    return q, k, v


def attend(p: LayerParts, q: torch.Tensor, k_rot: torch.Tensor, v: torch.Tensor, key_mask: Optional[torch.Tensor]) -> torch.Tensor:
    """The attention block's output ``O(Attn(q, k_rot, v))`` ``[B, R, d]``."""
    return p.o_proj(attention(q, k_rot, v, key_mask))


def feed_forward(p: LayerParts, h: torch.Tensor) -> torch.Tensor:
    """``FFN(n2(h))`` (:func:`~dynamic_dllm.core.architecture.ffn`: SwiGLU or mixture of experts)."""
    return ffn(p, p.ffn_norm(h))


#: the per-layer compute the executor runs, eager; :func:`compiled_kernels` gives the compiled twins
EAGER = (project, attend, feed_forward)
_COMPILED: Optional[tuple] = None


def compiled_kernels() -> tuple:
    """``torch.compile`` of :data:`EAGER` (``fullgraph=True``: no graph break; ``dynamic=True``: one
    graph for every row count R and every layer — the weights are inputs, not constants), built
    once per process. A mixture-of-experts FFN stays eager (its dispatch reads the per-expert row
    counts on the host)."""
    global _COMPILED
    if _COMPILED is None:
        _COMPILED = tuple(torch.compile(fn, fullgraph=True, dynamic=True) for fn in EAGER)
    return _COMPILED


RowsFn = Callable[[int, LayerContext], Optional[RowSet]]
KeysFn = Callable[[int, LayerContext], Optional[torch.Tensor]]


class PartialLayerExecutor:
    """Runs ``model`` over a fixed canvas geometry, holding the per-layer caches between steps.

    ``valid`` ``[B, L]`` marks real tokens (False on left padding); ``positions`` ``[B, L]`` are the
    RoPE positions. With ``keep_cache`` the caches are allocated on the first (necessarily full)
    forward; without, every forward is a plain full forward.

    Stats: ``rows_per_layer`` (rows computed, padding included: the cost), ``chosen_per_layer``
    (distinct rows written), ``step_rows`` (per forward, the rows computed per layer).
    """

    def __init__(self, model: DecoderModel, valid: torch.Tensor, positions: torch.Tensor, keep_cache: bool = True,
                 compile: bool = False, block_length: Optional[int] = None):
        self.model = model
        self.project, self.attend, self.feed_forward = compiled_kernels() if compile else EAGER
        self.heads = (model.n_heads, model.n_kv_heads, model.head_dim)
        self.parts = [model.layer(i) for i in range(model.n_layers)]
        if any(p.moe is not None for p in self.parts):  # expert dispatch reads counts on the host: eager
            self.feed_forward = feed_forward
        self.key_valid = None if bool(valid.all()) else valid[:, None, None, :]
        #: block-causal models: bool ``[L, L]`` query-by-key mask over canvas blocks of ``block_length``
        #: (the canvas starts at a block boundary; see :func:`~dynamic_dllm.core.architecture.block_causal_mask`)
        self.block_mask = (block_causal_mask(valid.shape[1], block_length or model.block_size, valid.device)
                           if model.block_causal else None)
        dtype = next(model.parameters()).dtype
        self.rope = Rotary(positions, model.head_dim, model.rope_theta, dtype, model.rope_full_precision, model.rope_dim)
        self.shape = tuple(valid.shape)
        B, L = self.shape
        #: ``b·L`` and ``b·(L+1)`` ``[B, 1]``: where batch row b starts in the row-flattened canvas and caches
        self.read_offsets = torch.arange(B, device=valid.device)[:, None] * L
        self.write_offsets = self.read_offsets + torch.arange(B, device=valid.device)[:, None]
        self.rope_flat = (self.rope.cos.view(B * L, 1, -1), self.rope.sin.view(B * L, 1, -1))
        self.keep_cache = keep_cache
        self.k_rot = self.v = self.attn = self.ffn = None
        self.stream: Optional[list] = None
        self.rows_per_layer = [0] * model.n_layers
        self.chosen_per_layer: list = [0] * model.n_layers
        self.step_rows: list[list[int]] = []
        self.extra_flops = 0
        self.row_flops = model.layer_flops(1, valid.shape[1])

    @property
    def ready(self) -> bool:
        return self.k_rot is not None

    def _allocate(self, dtype: torch.dtype, device) -> None:
        """Per layer: RoPE(K), V ``[B, L+1, Hkv, D]``, A and F ``[B, L+1, d]`` (row L discards
        padding writes), and the ``[B, L]`` views the layers read."""
        m, (B, L) = self.model, self.shape
        new = lambda *shape: list(torch.zeros(m.n_layers, B, L + 1, *shape, dtype=dtype, device=device).unbind(0))  # noqa: E731
        self.k_rot, self.v = new(m.n_kv_heads, m.head_dim), new(m.n_kv_heads, m.head_dim)
        self.attn, self.ffn = new(m.d_model), new(m.d_model)
        #: the four ``[n_layers, B, L+1, ·]`` tensors the per-layer caches are views of
        self.bases = [t[0]._base for t in (self.k_rot, self.v, self.attn, self.ffn)]
        names = ("k_rot", "v", "attn", "ffn")
        self.view = {name: [t[:, :L] for t in getattr(self, name)] for name in names}
        self.flat = {name: [t.view(B * (L + 1), *t.shape[2:]) for t in getattr(self, name)] for name in names}

    def freeze(self, rows: Sequence[int]):
        """Copies of the caches of batch ``rows`` (rows waiting for the rest of the batch), for
        :meth:`thaw` after the step: whatever the step computed for them is undone, so a waiting row
        leaves the step as it entered it. None when there is nothing to keep."""
        if not rows or not self.ready:
            return None
        index = torch.tensor(list(rows), device=self.bases[0].device)
        return index, [b.index_select(1, index) for b in self.bases]

    def thaw(self, saved) -> None:
        if saved is not None:
            index, copies = saved
            for base, copy in zip(self.bases, copies):
                base.index_copy_(1, index, copy)

    def cached(self, store: Optional[list], layer: int) -> Optional[torch.Tensor]:
        """``store``'s ``[B, L, ·]`` cache of ``layer`` flattened over heads (None before the first step)."""
        return None if store is None else store[layer][:, : self.shape[1]].flatten(2)

    @torch.no_grad()
    def forward(self, tokens: torch.Tensor, rows_fn: Optional[RowsFn], full: bool, head_start: int, head_end: int,
                keys_fn: Optional[KeysFn] = None) -> torch.Tensor:
        """One step. ``rows_fn(layer, ctx)`` gives the rows to recompute (None = reuse everything);
        it is called at every layer, also on full steps (whose answer is ignored), so policies can
        observe every layer input. ``full`` (or an empty cache) recomputes every row of every layer.
        ``keys_fn(layer, ctx)`` (called after ``rows_fn``) optionally gives the bool ``[B, L]`` keys
        the layer's attention may use (None = all). Returns logits ``[B, head_end - head_start, V]``
        of hidden rows [head_start, head_end)."""
        x = self.model.embed(tokens)
        B, L = self.shape
        if self.stream is None or self.stream[0].dtype != x.dtype:
            self.stream = [torch.empty_like(x) for _ in range(3)]  # layer inputs (alternating), h
            self.stream_rows = [t.view(B * L, -1) for t in self.stream]  # the same, [B·L, d]
        store = self.keep_cache
        full = full or not store or not self.ready
        if store and not self.ready:
            self._allocate(x.dtype, x.device)
        computed = []
        upstream: Optional[RowSet] = None
        for i in range(self.model.n_layers):
            ctx = LayerContext(self, i, x, upstream, self.stream_rows[(i - 1) % 2] if i else None)
            rows = rows_fn(i, ctx) if rows_fn is not None else None
            if keys_fn is not None:
                keep = keys_fn(i, ctx)
                if keep is not None:
                    keep = keep[:, None, None, :]
                    ctx.key_mask = keep if self.key_valid is None else keep & self.key_valid
            dense = full or (rows is not None and rows.covers(L))
            if ctx.fresh_keys is not None and not dense:  # asked for by a policy, not reused
                self.extra_flops += 2 * B * L * self.model.d_model * self.model.kv_dim
            if dense:
                x = self._dense_layer(i, ctx, store, self.stream[i % 2])
                n, chosen = B * L, B * L
                upstream = rows if rows is not None and rows.covers(L) else RowSet.span(0, L)
            elif rows is None or rows.size == 0:
                self._write_fresh_values(i, ctx)
                h = torch.add(x, self.view["attn"][i], out=self.stream[2])
                x = torch.add(h, self.view["ffn"][i], out=self.stream[i % 2])
                n = chosen = 0
                upstream = None
            else:
                layer = self._span_layer if rows.is_span else self._index_layer
                x = layer(i, ctx, rows, self.stream[i % 2])
                n, chosen = B * rows.size, rows.chosen(B, L)
                upstream = rows
            computed.append(n)
            self.rows_per_layer[i] += n
            self.chosen_per_layer[i] = self.chosen_per_layer[i] + chosen
        self.step_rows.append(computed)
        return self.model.head(self.model.final_norm(x[:, head_start:head_end]))

    def _write_fresh_values(self, i: int, ctx: LayerContext) -> None:
        if ctx.fresh_values is not None:
            self.view["v"][i].copy_(ctx.fresh_values.view_as(self.view["v"][i]))

    def _dense_layer(self, i: int, ctx: LayerContext, store: bool, out: torch.Tensor) -> torch.Tensor:
        p, x, rope = self.parts[i], ctx.hidden, self.rope
        fresh_all = ctx.fresh_values is not None and ctx.fresh_value_rows is None
        q, k_rot, v = self.project(p, ctx.normed(), rope.cos, rope.sin, rope, self.heads, ctx.fresh_keys,
                                   ctx.fresh_values if fresh_all else None)
        a = self.attend(p, q, k_rot, v, self._queries_mask(ctx.key_mask, self.block_mask))
        h = torch.add(x, a, out=self.stream[2])
        f = self.feed_forward(p, h)
        if store:
            view = self.view
            for name, value in (("v", v), ("k_rot", k_rot), ("attn", a), ("ffn", f)):
                view[name][i].copy_(value)
        return torch.add(h, f, out=out)

    def _span_layer(self, i: int, ctx: LayerContext, rows: RowSet, out: torch.Tensor) -> torch.Tensor:
        """Rows ``[s, e)`` of every batch row: slices, no gather or scatter."""
        p, x, rope, view = self.parts[i], ctx.hidden, self.rope, self.view
        s, e = rows.start, rows.start + rows.size
        xn = ctx._normed[:, s:e] if ctx._normed is not None else p.attn_norm(x[:, s:e])
        q, k_rot, v = self.project(p, xn, rope.cos[:, s:e], rope.sin[:, s:e], rope, self.heads)
        self._write_fresh_values(i, ctx)
        self.k_rot[i][:, s:e] = k_rot  # only rows U rotate
        self.v[i][:, s:e] = v
        rows_mask = None if self.block_mask is None else self.block_mask[s:e]
        self.attn[i][:, s:e] = self.attend(p, q, view["k_rot"][i], view["v"][i], self._queries_mask(ctx.key_mask, rows_mask))
        h = torch.add(x, view["attn"][i], out=self.stream[2])
        self.ffn[i][:, s:e] = self.feed_forward(p, h[:, s:e])
        return torch.add(h, view["ffn"][i], out=out)

    def _index_layer(self, i: int, ctx: LayerContext, rows: RowSet, out: torch.Tensor) -> torch.Tensor:
        """Rows ``index[b, :]`` per batch row, computed as ``[B·R, ·]``: read with ``index_select``
        from the row-flattened canvas, written with ``index_copy_`` into the row-flattened caches
        (whole rows, one copy each; unwritable entries to their batch row's discarded row L)."""
        p, x, rope, view, flat = self.parts[i], ctx.hidden, self.rope, self.view, self.flat
        (B, L), R = self.shape, rows.size
        read, write = rows.flat_read(self.read_offsets, L), rows.flat_write(self.write_offsets, L)
        if ctx._normed is not None:
            xn = ctx._normed.reshape(B * L, -1).index_select(0, read)
        else:
            xn = p.attn_norm(ctx.flat_hidden().index_select(0, read))
        cos, sin = (t.index_select(0, read) for t in self.rope_flat)
        v_given, v_write = self._fresh_value_rows(ctx, rows, read, write)
        q, k_rot, v = self.project(p, xn, cos, sin, rope, self.heads, None, v_given)
        self._write_fresh_values(i, ctx)
        flat["k_rot"][i].index_copy_(0, write, k_rot)  # only rows U rotate
        if v_write is not None:
            flat["v"][i].index_copy_(0, v_write, v)
        rows_mask = None if self.block_mask is None else self.block_mask.index_select(0, rows.index.reshape(-1)).view(B, R, L)
        a = self.attend(p, q.view(B, R, *q.shape[1:]), view["k_rot"][i], view["v"][i], self._queries_mask(ctx.key_mask, rows_mask))
        flat["attn"][i].index_copy_(0, write, a.view(B * R, -1))
        h = torch.add(x, view["attn"][i], out=self.stream[2])
        flat["ffn"][i].index_copy_(0, write, self.feed_forward(p, self.stream_rows[2].index_select(0, read)))
        return torch.add(h, view["ffn"][i], out=out)

    @staticmethod
    def _queries_mask(key_mask: Optional[torch.Tensor], rows_mask: Optional[torch.Tensor]) -> Optional[torch.Tensor]:
        """The attention mask of a layer's queries: the keys mask ``[B, 1, 1, L]`` (padding and
        ``keys_fn``) and, for block-causal models, the queries' rows of the block mask (``[R, L]``
        or ``[B, R, L]``)."""
        if rows_mask is None:
            return key_mask
        rows_mask = rows_mask[None, None] if rows_mask.dim() == 2 else rows_mask[:, None]
        return rows_mask if key_mask is None else rows_mask & key_mask

    def _fresh_value_rows(self, ctx: LayerContext, rows: RowSet, read: torch.Tensor, write: torch.Tensor) -> tuple:
        """(V given to :func:`project`, where to write the projected V) for an index layer. V a
        policy already projected (:meth:`LayerContext.values`) is the step's V on its rows — one
        projection, not two: on every row it is taken as is (nothing projected, nothing written
        again); on a span only the rows outside it are projected into the cache."""
        fresh = ctx.fresh_values
        if fresh is None:
            return None, write
        span = ctx.fresh_value_rows
        if span is None:
            return fresh.reshape(-1, fresh.shape[-1]).index_select(0, read), None
        if not span.is_span:
            return None, write
        L = self.shape[1]
        pos = rows.positions(self.shape[0], read.device)
        inside = (pos >= span.start) & (pos < span.start + span.size)
        return None, (torch.where(inside, L, rows.targets(L)) + self.write_offsets).view(-1)

    def recompute_fraction(self, n_steps: int) -> float:
        """FLOPs spent in the layers (rows computed, padding included) / FLOPs of ``n_steps`` full forwards."""
        B, L = self.shape
        full = n_steps * self.model.n_layers * B * L * self.row_flops
        spent = sum(self.rows_per_layer) * self.row_flops + self.extra_flops
        return spent / full if full else 0.0

    def chosen_rows(self) -> tuple:
        """Distinct rows written per layer, summed over steps and batch (one host read, at the end)."""
        return tuple(torch.stack([torch.as_tensor(c) for c in self.chosen_per_layer]).tolist())
