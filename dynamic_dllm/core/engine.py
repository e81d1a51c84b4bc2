"""The denoising loop shared by every policy.

canvas = prompt + ``gen_length`` MASKs, split into blocks decoded left to right. Blocks start after
the prompt; for a block-causal model (SDAR) they are aligned to position 0 as it was trained, so
the prompt's last ``P mod block_length`` tokens share the first block with its masks (they are
not masked and never committed) and the canvas runs to the end of the block holding position
``P + gen_length − 1`` (the tokens past ``gen_length`` are decoded and cut). Each step:
cache policies may ask for a full step and choose, per layer, the rows to recompute (united)
and optionally the keys attention may use (intersected); the partial-layer executor runs the
model; the unmask policy picks commits among the current block's masks; the engine writes them
and records stats. The loop never looks at policy names; it checks the commit contract (only
masked current-block positions) and that a block finishes within ``max(steps_per_block,
block_length)`` steps.

Host syncs: one per step (the commit count, the contract check and "does the block still have
masks" travel in one ``tolist``), plus whatever a policy takes in ``step_start``. Nothing inside
the layer loop syncs.
"""

from __future__ import annotations

import time
from typing import Optional, Sequence

import torch

from .architecture import DecoderModel
from .executor import PartialLayerExecutor
from .policy import RunInfo, check_policy
from .rows import union
from .types import Commit, GenerationConfig, GenerationStats, StepState


class _Clock:
    """Seconds spent inside policy calls."""

    def __init__(self):
        self.seconds = 0.0

    def __call__(self, fn, *args):
        t0 = time.perf_counter()
        out = fn(*args)
        self.seconds += time.perf_counter() - t0
        return out


def unconditional(x: torch.Tensor, prompt_length: int, mask_id: int) -> torch.Tensor:
    """Classifier-free guidance's unconditional canvas: ``x`` with the prompt masked out (LLaDA)."""
    return x.slice_scatter(torch.full_like(x[:, :prompt_length], mask_id), 1, 0, prompt_length)


def guided(cond: torch.Tensor, uncond: torch.Tensor, scale: float) -> torch.Tensor:
    """LLaDA's guidance mix ``u + (s + 1)(c − u)`` of conditional and unconditional logits."""
    return uncond + (scale + 1) * (cond - uncond)


def check_inputs(model: DecoderModel, input_ids: torch.Tensor, attention_mask: Optional[torch.Tensor],
                 config: GenerationConfig, cache_policies: Sequence) -> None:
    """Every input error, raised as ValueError before any compute."""
    if not isinstance(input_ids, torch.Tensor) or input_ids.dim() != 2 or input_ids.dtype not in (torch.long, torch.int):
        raise ValueError(f"input_ids must be an integer tensor [batch, prompt_length], got {getattr(input_ids, 'shape', type(input_ids))}")
    if input_ids.shape[0] == 0:
        raise ValueError("the batch is empty: pass at least one prompt")
    if attention_mask is not None and attention_mask.shape != input_ids.shape:
        raise ValueError(f"attention_mask shape {tuple(attention_mask.shape)} differs from input_ids shape {tuple(input_ids.shape)}")
    lengths = attention_mask.sum(1) if attention_mask is not None else torch.full((input_ids.shape[0],), input_ids.shape[1])
    config.check_prompt(int(lengths.min()), model.max_length)
    config.check_prompt(input_ids.shape[1], model.max_length)
    if bool((input_ids == model.mask_id).any()):
        raise ValueError(f"the prompt contains the mask token (id {model.mask_id}); it would never be decoded")
    if int(input_ids.max()) >= model.vocab_size or int(input_ids.min()) < 0:
        raise ValueError(f"prompt token ids must lie in [0, {model.vocab_size}); got min {int(input_ids.min())}, max {int(input_ids.max())}")
    if model.block_causal:
        if attention_mask is not None and not bool(attention_mask.bool().all()):
            raise ValueError(f"{model.family} is block-causal: its blocks are aligned to each sequence's position 0, so a "
                             "left-padded batch cannot share them; pass prompts of equal length (or one at a time)")
        if config.block_length != model.block_size:
            raise ValueError(f"block_length={config.block_length}, but this {model.family} checkpoint was trained with "
                             f"block_size={model.block_size} (config.json); its attention blocks must match it")
    if config.cfg_scale > 0 and not all(getattr(p, "supports_cfg", False) for p in cache_policies):
        names = [type(p).__name__ for p in cache_policies if not getattr(p, "supports_cfg", False)]
        raise ValueError(f"cfg_scale={config.cfg_scale} needs a cache policy that supports guidance; {names} do not (use cache 'none')")


def _edits(commit: Commit, chosen: torch.Tensor, unmask_name: str) -> Optional[torch.Tensor]:
    """A commit's edits (bool, the shape of its positions) or None."""
    if commit.edits is None:
        return None
    if tuple(commit.edits.shape) != tuple(chosen.shape):
        raise RuntimeError(f"unmask policy {unmask_name} returned edits {tuple(commit.edits.shape)} for positions "
                           f"{tuple(chosen.shape)}; they have the same shape")
    return commit.edits.bool()


@torch.no_grad()
def denoise(model: DecoderModel, input_ids: torch.Tensor, config: GenerationConfig, cache_policies: Sequence,
            unmask_policy, attention_mask: Optional[torch.Tensor] = None, progress=None,
            on_block=None) -> tuple[torch.Tensor, GenerationStats]:
    """Run the loop on left-padded ``input_ids`` ``[B, P]``. Returns the final canvas ``[B, P+G]``
    and the stats. ``progress``, if given, is called with the number of tokens committed per step;
    ``on_block``, if given, with ``(block_index, tokens [B, ≤ block_length])`` (the block's generated
    positions) when a block is final
    (blocks are decoded left to right, so a streaming server can send it)."""
    cache_policies = [check_policy(p, "cache") for p in cache_policies]
    unmask_policy = check_policy(unmask_policy, "unmask")
    check_inputs(model, input_ids, attention_mask, config, cache_policies)
    device = next(model.parameters()).device
    B, P = input_ids.shape
    G, Lb = config.gen_length, config.block_length
    origin = (P // Lb) * Lb if model.block_causal else P  # where the first block starts
    n_blocks = -(-(P - origin + G) // Lb)
    L = origin + n_blocks * Lb
    shift, mask_id = model.logit_shift, model.mask_id
    x = torch.cat([input_ids.to(device).long(), torch.full((B, L - P), mask_id, dtype=torch.long, device=device)], 1)
    prompt_valid = torch.ones(B, P, dtype=torch.bool, device=device) if attention_mask is None else attention_mask.to(device).bool()
    valid = torch.cat([prompt_valid, torch.ones(B, L - P, dtype=torch.bool, device=device)], 1)
    positions = (valid.long().cumsum(1) - 1).clamp(min=0)
    generator = torch.Generator(device=device).manual_seed(config.seed)

    cfg = config.cfg_scale > 0
    keep_cache = any(getattr(p, "reuses_cache", True) for p in cache_policies)
    if cfg:  # unconditional branch: the prompt masked out (LLaDA), batched after the conditional one
        executor = PartialLayerExecutor(model, valid.repeat(2, 1), positions.repeat(2, 1), keep_cache, config.compile, Lb)
    else:
        executor = PartialLayerExecutor(model, valid, positions, keep_cache, config.compile, Lb)
    clock = _Clock()
    key_policies = [p for p in cache_policies if getattr(p, "restricts_keys", False)]
    unmask_name = type(unmask_policy).__name__
    response_logits = getattr(unmask_policy, "logits_rows", "block") == "response"
    run = RunInfo(config=config, batch_size=B, prompt_length=P, length=L, n_layers=model.n_layers, d_model=model.d_model,
                  mask_id=mask_id, eos_id=model.eos_id, logit_shift=shift, device=device, valid=valid,
                  sampling_defaults=dict(getattr(model, "sampling_defaults", {})), block_causal=model.block_causal)
    for policy in (*cache_policies, unmask_policy):
        clock(policy.start, run)

    tokens_per_step: list[int] = []
    last_committed = torch.zeros(B, L, dtype=torch.bool, device=device)
    max_steps = max(config.steps_per_block, Lb) + int(getattr(unmask_policy, "extra_steps_per_block", 0))
    edited = 0
    step = 0
    t_start = time.perf_counter()
    for block in range(n_blocks):
        bs, be = origin + block * Lb, origin + (block + 1) * Lb
        # a block starts fully masked unless stop_at_eos filled it with EOS
        waiting: tuple = ()  # batch rows without masks in this block: they wait for the others
        if config.stop_at_eos:
            left = (x[:, bs:be] == mask_id).sum(1).tolist()
            has_masks, waiting = any(left), tuple(b for b, n in enumerate(left) if n == 0)
        else:
            has_masks = True
        step_in_block = 0
        while has_masks:
            if step_in_block >= max_steps:
                raise RuntimeError(f"unmask policy {unmask_name} did not finish block {block} in {max_steps} steps")
            state = StepState(
                x=x, masked=x == mask_id, valid=valid, positions=positions, last_committed=last_committed,
                prompt_length=P, block=block, block_start=bs, block_end=be, step=step, step_in_block=step_in_block,
                config=config, n_layers=model.n_layers, mask_id=mask_id, eos_id=model.eos_id, logit_shift=shift,
                generator=generator, waiting=waiting)
            full = False
            for p in cache_policies:
                full = bool(clock(p.step_start, state)) or full

            def rows_fn(layer, ctx, _state=state):
                return union([clock(p.layer_rows, _state, layer, ctx) for p in cache_policies], ctx.hidden.shape[0], L, device)

            def keys_fn(layer, ctx, _state=state):
                keys = None
                for p in key_policies:
                    a = clock(p.layer_keys, _state, layer, ctx)
                    keys = a if keys is None else (keys if a is None else keys & a)
                return keys

            head = (P - shift, L - shift) if response_logits else (bs - shift, be - shift)
            # a block-causal, AR-initialised model's first block may start at position 0, which has no
            # predecessor: it holds a prompt token (never decoded) and gets its own logits
            pad = max(0, -head[0])
            head = (head[0] + pad, head[1])
            # a waiting row leaves the step as it entered it (its caches restored): it decodes as alone
            frozen = executor.freeze(waiting + tuple(b + B for b in waiting) if cfg else waiting)
            if cfg:  # both branches in one batch
                both = executor.forward(torch.cat([x, unconditional(x, P, mask_id)]), rows_fn, full, *head,
                                        keys_fn if key_policies else None)
                logits = guided(both[:B], both[B:], config.cfg_scale)
            else:
                logits = executor.forward(x, rows_fn, full, *head, keys_fn if key_policies else None)
            executor.thaw(frozen)
            if pad:
                logits = torch.cat([logits[:, :1].expand(-1, pad, -1), logits], 1)
            commit: Commit = clock(unmask_policy.commit, state, logits)
            if not isinstance(commit, Commit):
                raise RuntimeError(f"unmask policy {unmask_name} returned {type(commit).__name__}, not a Commit")
            chosen = commit.positions.bool()
            if tuple(commit.tokens.shape) != tuple(chosen.shape):
                raise RuntimeError(f"unmask policy {unmask_name} returned tokens {tuple(commit.tokens.shape)} for positions "
                                   f"{tuple(chosen.shape)}; a Commit's tokens and positions have the same shape")
            cs = be - chosen.shape[1]  # a commit covers the block, or everything decoded so far and the block
            if cs not in (bs, P):
                raise RuntimeError(f"unmask policy {unmask_name} committed {chosen.shape[1]} columns; a Commit covers "
                                   f"the block ({Lb}) or the response up to the block's end ({be - P})")
            edits = _edits(commit, chosen, unmask_name)
            x_before = x[:, cs:be]
            if edits is not None:  # an edit that rewrites a token with itself changes nothing
                edits = edits & (commit.tokens != x_before)
            changed = chosen if edits is None else chosen | edits
            x = x.slice_scatter(torch.where(changed, commit.tokens.to(x.dtype), x_before), 1, cs, be)
            committed = last_committed.new_zeros(B, L).slice_scatter(changed, 1, cs, be)
            counts = [chosen.sum(), (chosen & state.masked[:, cs:be]).sum(), (chosen & (commit.tokens != mask_id)).sum()]
            if edits is not None:  # edits rewrite decoded response tokens of this block only, never into a mask
                decoded = ~state.masked[:, cs:be] & (torch.arange(cs, be, device=device) >= max(P, bs))
                counts += [(edits & (~decoded | (commit.tokens == mask_id))).sum(), edits.sum()]
            busy = [] if commit.busy is None else [commit.busy.long()]
            n, n_masked_chosen, n_unmasked, *rest = torch.cat(
                [torch.stack(counts), (x[:, bs:be] == mask_id).sum(1), *busy]).tolist()
            (bad_edits, n_edited), rest = (rest[:2], rest[2:]) if edits is not None else ((0, 0), rest)
            left, busy = rest[:B], rest[B:] or [0] * B
            n_left = sum(left)
            # rows without masks wait for the others (their caches restored after each step), unless
            # the policy still works on them (an editing sampler's refinement steps)
            waiting = tuple(b for b, m in enumerate(left) if m == 0 and not busy[b])
            if n != n_masked_chosen:
                raise RuntimeError(f"unmask policy {unmask_name} committed positions that are not masked")
            if bad_edits:
                raise RuntimeError(f"unmask policy {unmask_name} edited masked, prompt or earlier-block positions, or wrote the"
                                   " mask token; edits rewrite decoded tokens of the current block only")
            edited += n_edited
            for p in cache_policies:
                clock(p.step_end, state, committed)
            last_committed = committed
            tokens_per_step.append(n_unmasked)
            if progress is not None:
                progress(n_unmasked)
            step += 1
            step_in_block += 1
            has_masks = (n_left > 0 or commit.continue_block) and not commit.end_block
        if on_block is not None:
            on_block(block, x[:, max(bs, P):min(be, P + G)])
        if config.stop_at_eos:
            done = (x[:, P:be] == model.eos_id).any(1)
            x = torch.cat([x[:, :be], torch.where(done[:, None] & (x[:, be:] == mask_id), model.eos_id, x[:, be:])], 1)
    wall = time.perf_counter() - t_start
    x = x[:, :P + G]  # a block-causal model's last block may run past gen_length
    generated = int((x[:, P:] != model.eos_id).sum())
    stats = GenerationStats(
        nfe=step, wall_time=wall, tokens_per_second=generated / wall if wall > 0 else 0.0, generated_tokens=generated,
        tokens_per_step=tuple(tokens_per_step), recomputed_rows=tuple(executor.rows_per_layer),
        recompute_fraction=executor.recompute_fraction(step), policy_time=clock.seconds,
        chosen_rows=executor.chosen_rows(), rows_per_step=tuple(tuple(r) for r in executor.step_rows), edited_tokens=edited)
    return x, stats
