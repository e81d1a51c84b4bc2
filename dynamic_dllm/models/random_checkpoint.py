"""Deterministic random checkpoints in exact HF layout, for tests and benchmarks.

``build_random_checkpoint("llada", folder, n_layers=2, d_model=64)`` writes a folder that
:func:`~dynamic_dllm.models.checkpoint.load_checkpoint` reads back like a real LLaDA/Dream/SDAR
folder: the family's config field names, its state-dict keys, and the byte-level tokenizer
(vocabulary 256 bytes + special tokens; LLaDA's ``<|mdm_mask|>`` for LLaDA and Dream, SDAR's
``<|MASK|>`` and ChatML for SDAR; EOS = pad = ``<|endoftext|>``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import torch

from .checkpoint import save_checkpoint
from .dream import DreamModel
from .fast_dllm_v2 import FastDLLMv2Model
from .llada import LLaDAModel
from .llada2 import LLaDA2Model
from .llada_moe import LLaDAMoEModel
from .sdar import SDARModel
from .tokenizer import build_byte_tokenizer

#: family -> (adapter, tokenizer style)
FAMILIES = {"llada": (LLaDAModel, "llada"), "llada-moe": (LLaDAMoEModel, "llada"), "dream": (DreamModel, "llada"),
            "sdar": (SDARModel, "qwen"), "fast-dllm-v2": (FastDLLMv2Model, "qwen"), "llada2": (LLaDA2Model, "llada")}


def random_config(family: str, vocab_size: int, mask_id: int, eos_id: int, n_layers: int = 2, d_model: int = 64,
                  n_heads: int = 4, n_kv_heads: Optional[int] = None, d_ff: Optional[int] = None, max_length: int = 1024,
                  tied_embeddings: bool = False, head_dim: Optional[int] = None, block_size: int = 4,
                  n_experts: int = 8, top_k: int = 2, d_expert: Optional[int] = None, moe_layers: Optional[list] = None,
                  d_shared: Optional[int] = None, n_group: int = 4, topk_group: int = 2, dense_layers: int = 1) -> dict:
    d_ff = d_ff or 2 * d_model
    if tied_embeddings and family == "dream":
        raise ValueError("tied_embeddings is a LLaDA/SDAR option; Dream checkpoints have an untied lm_head")
    if family == "sdar":  # keys as SDAR-4B-Chat's config.json writes them
        return {
            "model_type": "sdar", "architectures": ["SDARForCausalLM"], "hidden_size": d_model, "num_hidden_layers": n_layers,
            "num_attention_heads": n_heads, "num_key_value_heads": n_kv_heads or max(1, n_heads // 2),
            "head_dim": head_dim or d_model // n_heads, "intermediate_size": d_ff, "vocab_size": vocab_size,
            "hidden_act": "silu", "rms_norm_eps": 1e-6, "rope_theta": 1000000.0, "rope_scaling": None,
            "max_position_embeddings": max_length, "attention_bias": False, "attention_dropout": 0.0,
            "tie_word_embeddings": bool(tied_embeddings), "use_cache": False, "sliding_window": None,
            "use_sliding_window": False, "max_window_layers": n_layers, "bos_token_id": eos_id, "eos_token_id": eos_id,
            "block_size": block_size, "mask_token_id": mask_id, "fuse_cross_entropy": True, "torch_dtype": "float32",
        }
    if family == "fast-dllm-v2":  # keys as Fast_dLLM_v2_7B's config.json writes them (+ mask_token_id, which it lacks)
        return {
            "model_type": "Fast_dLLM_Qwen", "architectures": ["Fast_dLLM_QwenForCausalLM"], "hidden_size": d_model,
            "num_hidden_layers": n_layers, "num_attention_heads": n_heads,
            "num_key_value_heads": n_kv_heads or max(1, n_heads // 2), "intermediate_size": d_ff, "vocab_size": vocab_size,
            "hidden_act": "silu", "rms_norm_eps": 1e-6, "rope_theta": 1000000.0, "rope_scaling": None,
            "max_position_embeddings": max_length, "attention_dropout": 0.0, "bd_size": block_size,
            "layer_types": ["full_attention"] * n_layers, "use_sliding_window": False, "sliding_window": None,
            "max_window_layers": n_layers, "tie_word_embeddings": bool(tied_embeddings), "use_cache": True,
            "initializer_range": 0.02, "bos_token_id": eos_id, "eos_token_id": eos_id, "pad_token_id": eos_id,
            "mask_token_id": mask_id, "torch_dtype": "float32",
        }
    if family == "llada2":  # keys as LLaDA2.0-mini's config.json writes them (+ block_size and mask_token_id)
        return {
            "model_type": "llada2_moe", "architectures": ["LLaDA2MoeModelLM"], "hidden_size": d_model,
            "num_hidden_layers": n_layers, "num_attention_heads": n_heads, "num_key_value_heads": n_kv_heads or max(1, n_heads // 2),
            "head_dim": head_dim or d_model // n_heads, "intermediate_size": d_ff, "moe_intermediate_size": d_expert or d_model // 2,
            "num_experts": n_experts, "num_shared_experts": 1 if d_shared is None else d_shared, "num_experts_per_tok": top_k,
            "n_group": n_group, "topk_group": topk_group, "routed_scaling_factor": 2.5, "first_k_dense_replace": dense_layers,
            "partial_rotary_factor": 0.5, "vocab_size": vocab_size, "hidden_act": "silu", "rms_norm_eps": 1e-6,
            "rope_theta": 600000.0, "rope_scaling": None, "max_position_embeddings": max_length, "use_qkv_bias": False,
            "use_bias": False, "use_qk_norm": True, "norm_head": False, "tie_word_embeddings": bool(tied_embeddings),
            "use_sliding_window": False, "use_cache": True, "embedding_dropout": 0.0, "attention_dropout": 0.0,
            "output_dropout": 0.0, "initializer_range": 0.02, "output_router_logits": False, "block_size": block_size,
            "eos_token_id": eos_id, "pad_token_id": eos_id, "mask_token_id": mask_id, "torch_dtype": "float32",
        }
    if family == "llada-moe":  # keys as LLaDA-MoE-7B-A1B's config.json writes them (+ mask_token_id, which it lacks)
        return {
            "model_type": "llada", "architectures": ["LLaDAMoEModelLM"], "hidden_size": d_model,
            "num_hidden_layers": n_layers, "num_attention_heads": n_heads, "num_key_value_heads": n_kv_heads or n_heads,
            "dense_intermediate_size": d_ff, "expert_intermediate_size": d_expert or d_model // 2,
            "shared_expert_intermediate_size": d_shared, "num_experts": n_experts, "num_experts_per_tok": top_k,
            "moe_layer_freq": [1] * n_layers if moe_layers is None else list(moe_layers), "vocab_size": vocab_size,
            "hidden_act": "silu", "rms_norm_eps": 1e-5, "rope_theta": 50000.0, "rope_scaling": None,
            "partial_rotary_factor": 1, "max_position_embeddings": max_length, "attention_bias": False,
            "attention_dropout": 0.0, "clip_qkv": None, "qk_layernorm": True, "norm_topk_prob": False,
            "moe_router_enable_expert_bias": False, "moe_router_score_function": "softmax", "routed_scaling_factor": 1,
            "output_router_logits": False, "router_aux_loss_coef": 0.01, "tie_word_embeddings": bool(tied_embeddings),
            "use_cache": False, "initializer_range": 0.02, "bos_token_id": None, "eos_token_id": eos_id,
            "pad_token_id": eos_id, "mask_token_id": mask_id, "torch_dtype": "float32",
        }
    if family == "llada":
        return {
            "model_type": "llada", "architectures": ["LLaDAModelLM"], "d_model": d_model, "n_layers": n_layers,
            "n_heads": n_heads, "n_kv_heads": n_kv_heads or n_heads, "mlp_hidden_size": d_ff, "mlp_ratio": 4,
            "vocab_size": vocab_size, "embedding_size": vocab_size, "activation_type": "silu", "block_type": "llama",
            "layer_norm_type": "rms", "rms_norm_eps": 1e-5, "include_bias": False, "include_qkv_bias": False,
            "rope": True, "rope_theta": 500000.0, "rope_full_precision": True, "weight_tying": bool(tied_embeddings),
            "max_sequence_length": max_length, "mask_token_id": mask_id, "eos_token_id": eos_id, "pad_token_id": eos_id,
        }
    if family == "dream":
        return {
            "model_type": "Dream", "architectures": ["DreamModel"], "hidden_size": d_model, "num_hidden_layers": n_layers,
            "num_attention_heads": n_heads, "num_key_value_heads": n_kv_heads or max(1, n_heads // 2),
            "intermediate_size": d_ff, "vocab_size": vocab_size, "rms_norm_eps": 1e-6, "rope_theta": 1000000.0,
            "hidden_act": "silu", "max_position_embeddings": max_length, "tie_word_embeddings": False,
            "mask_token_id": mask_id, "eos_token_id": eos_id, "pad_token_id": eos_id,
        }
    raise ValueError(f"unknown family {family!r}; known: {', '.join(FAMILIES)}")


def init_weights(model: torch.nn.Module, seed: int, std: float = 0.02, final_norm: float = 1.0) -> None:
    """Normal(0, std) for matrices, embeddings and biases; ones for the per-layer norm weights;
    ``final_norm`` for the last norm before the head (``ln_f`` / ``model.norm``).

    Random checkpoints keep ``final_norm`` = 1 so their logits are not all zero; training starts
    from ``final_norm`` = 0 (uniform first predictions, loss log V at step 0)."""
    gen = torch.Generator().manual_seed(seed)
    for name, p in model.named_parameters():
        with torch.no_grad():
            if p.ndim > 1 or "bias" in name:
                p.copy_(torch.randn(p.shape, generator=gen) * std)
            elif name.endswith(("ln_f.weight", "model.norm.weight")):
                p.fill_(final_norm)
            elif "norm" in name:
                p.fill_(1.0)
            else:
                raise ValueError(f"init_weights: no rule for the 1-D parameter {name!r}")


def build_random_checkpoint(family: str, folder, seed: int = 0, max_shard_bytes: Optional[int] = None, std: float = 0.02,
                            tokenizer_style: Optional[str] = None, **sizes) -> Path:
    """A random ``family`` checkpoint in ``folder``; ``tokenizer_style`` overrides the family's byte
    tokenizer (e.g. ``"diffucoder"`` for a Dream-architecture coder)."""
    if family not in FAMILIES:
        raise ValueError(f"unknown family {family!r}; known: {', '.join(FAMILIES)}")
    adapter, style = FAMILIES[family]
    tokenizer = build_byte_tokenizer(tokenizer_style or style)
    config = random_config(family, len(tokenizer), tokenizer.mask_token_id, tokenizer.eos_token_id, **sizes)
    model = adapter(config)
    init_weights(model, seed, std)
    return save_checkpoint(model, config, folder, tokenizer=tokenizer, max_shard_bytes=max_shard_bytes)
