"""The denoising loop shared by every policy.

canvas = prompt + ``gen_length`` MASKs, split into blocks decoded left to right. Each step:
cache policies may ask for a full step and choose, per layer, the rows to recompute (united)
and optionally the keys attention may use (intersected);
the partial-layer executor runs the model; the unmask policy picks commits among the current
block's masks; the engine writes them and records stats. The loop never looks at policy names;
it checks the commit contract (only masked current-block positions) and that a block finishes
within ``max(steps_per_block, block_length)`` steps.
"""

from __future__ import annotations

import time
from typing import Optional, Sequence

import pluggy
import torch

from ..models.base import DecoderModel
from .executor import PartialLayerExecutor
from .hookspecs import PROJECT, StepSpecs
from .policy import RunInfo
from .types import Commit, GenerationConfig, GenerationStats, StepState


class _TimedHooks:
    """Calls the step hooks of one generation and accumulates the time spent inside policies."""

    def __init__(self, cache_policies: Sequence, unmask_policy):
        self.pm = pluggy.PluginManager(PROJECT)
        self.pm.add_hookspecs(StepSpecs)
        for i, policy in enumerate(cache_policies):
            self.pm.register(policy, name=f"cache-{i}-{type(policy).__name__}")
        self.pm.register(unmask_policy, name=f"unmask-{type(unmask_policy).__name__}")
        self.unmask_name = type(unmask_policy).__name__
        self.seconds = 0.0

    def call(self, hook: str, **kwargs):
        t0 = time.perf_counter()
        out = getattr(self.pm.hook, hook)(**kwargs)
        self.seconds += time.perf_counter() - t0
        return out


def _union(answers: list) -> Optional[torch.Tensor]:
    rows = None
    for a in answers:
        rows = a if rows is None else rows | a
    return rows


def _intersection(answers: list) -> Optional[torch.Tensor]:
    keys = None
    for a in answers:
        keys = a if keys is None else keys & a
    return keys


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
    if config.cfg_scale > 0 and not all(getattr(p, "supports_cfg", False) for p in cache_policies):
        names = [type(p).__name__ for p in cache_policies if not getattr(p, "supports_cfg", False)]
        raise ValueError(f"cfg_scale={config.cfg_scale} needs a cache policy that supports guidance; {names} do not (use cache 'none')")


@torch.no_grad()
def denoise(model: DecoderModel, input_ids: torch.Tensor, config: GenerationConfig, cache_policies: Sequence,
            unmask_policy, attention_mask: Optional[torch.Tensor] = None, progress=None) -> tuple[torch.Tensor, GenerationStats]:
    """Run the loop on left-padded ``input_ids`` ``[B, P]``. Returns the final canvas ``[B, P+G]``
    and the stats. ``progress``, if given, is called with the number of tokens committed per step."""
    check_inputs(model, input_ids, attention_mask, config, cache_policies)
    device = next(model.parameters()).device
    B, P = input_ids.shape
    G, Lb = config.gen_length, config.block_length
    L = P + G
    shift = model.logit_shift
    x = torch.cat([input_ids.to(device).long(), torch.full((B, G), model.mask_id, dtype=torch.long, device=device)], 1)
    prompt_valid = torch.ones(B, P, dtype=torch.bool, device=device) if attention_mask is None else attention_mask.to(device).bool()
    valid = torch.cat([prompt_valid, torch.ones(B, G, dtype=torch.bool, device=device)], 1)
    positions = (valid.long().cumsum(1) - 1).clamp(min=0)
    generator = torch.Generator(device=device).manual_seed(config.seed)

    cfg = config.cfg_scale > 0
    if cfg:  # unconditional branch: the prompt masked out (LLaDA), batched after the conditional one
        executor = PartialLayerExecutor(model, valid.repeat(2, 1), positions.repeat(2, 1))
    else:
        executor = PartialLayerExecutor(model, valid, positions)
    hooks = _TimedHooks(cache_policies, unmask_policy)
    restricts_keys = bool(hooks.pm.hook.cache_keys.get_hookimpls())  # else skip the per-layer call
    hooks.call("generation_start", run=RunInfo(
        config=config, batch_size=B, prompt_length=P, length=L, n_layers=model.n_layers, d_model=model.d_model,
        mask_id=model.mask_id, eos_id=model.eos_id, logit_shift=shift, device=device))

    tokens_per_step: list[int] = []
    last_committed = torch.zeros(B, L, dtype=torch.bool, device=device)
    max_steps = max(config.steps_per_block, Lb)
    step = 0
    t_start = time.perf_counter()
    for block in range(config.num_blocks):
        bs, be = P + block * Lb, P + (block + 1) * Lb
        step_in_block = 0
        while bool((x[:, bs:be] == model.mask_id).any()):
            if step_in_block >= max_steps:
                raise RuntimeError(f"unmask policy {hooks.unmask_name} left masks in block {block} after {max_steps} steps")
            state = StepState(
                x=x.clone(), masked=x == model.mask_id, valid=valid, positions=positions, last_committed=last_committed,
                prompt_length=P, block=block, block_start=bs, block_end=be, step=step, step_in_block=step_in_block,
                config=config, n_layers=model.n_layers, mask_id=model.mask_id, eos_id=model.eos_id, logit_shift=shift,
                generator=generator)
            full = any(hooks.call("cache_step_start", state=state))

            def rows_fn(layer, ctx, _state=state):
                return _union(hooks.call("cache_rows", state=_state, layer=layer, context=ctx))

            def keys_fn(layer, ctx, _state=state):
                return _intersection(hooks.call("cache_keys", state=_state, layer=layer, context=ctx))

            keys = keys_fn if restricts_keys else None

            if cfg:
                uncond = x.clone()
                uncond[:, :P] = model.mask_id
                both = executor.forward(torch.cat([x, uncond]), rows_fn, full, bs - shift, be - shift, keys)
                cond, un = both[:B], both[B:]
                logits = un + (config.cfg_scale + 1) * (cond - un)
            else:
                logits = executor.forward(x, rows_fn, full, bs - shift, be - shift, keys)
            commit: Commit = hooks.call("unmask_commit", state=state, logits=logits)
            if commit is None:
                raise RuntimeError(f"unmask policy {hooks.unmask_name} returned no commit")
            chosen = commit.positions.bool()
            if bool((chosen & ~state.block_masked).any()):
                raise RuntimeError(f"unmask policy {hooks.unmask_name} committed positions that are not masked in the current block")
            x[:, bs:be] = torch.where(chosen, commit.tokens.to(x.dtype), x[:, bs:be])
            committed = torch.zeros(B, L, dtype=torch.bool, device=device)
            committed[:, bs:be] = chosen
            hooks.call("cache_step_end", state=state, committed=committed)
            last_committed = committed
            n = int(chosen.sum())
            tokens_per_step.append(n)
            if progress is not None:
                progress(n)
            step += 1
            step_in_block += 1
        if config.stop_at_eos:
            done = (x[:, P:be] == model.eos_id).any(1)
            x[:, be:] = torch.where(done[:, None] & (x[:, be:] == model.mask_id), model.eos_id, x[:, be:])
    wall = time.perf_counter() - t_start
    generated = int((x[:, P:] != model.eos_id).sum())
    stats = GenerationStats(
        nfe=step, wall_time=wall, tokens_per_second=generated / wall if wall > 0 else 0.0, generated_tokens=generated,
        tokens_per_step=tuple(tokens_per_step), recomputed_rows=tuple(int(r) for r in executor.rows_per_layer),
        recompute_fraction=executor.recompute_fraction(step), policy_time=hooks.seconds)
    return x, stats
