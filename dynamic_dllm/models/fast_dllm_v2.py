"""Fast-dLLM v2 (Efficient-Large-Model/Fast_dLLM_v2_1.5B / 7B) as a native module — no ``trust_remote_code``.

A block-diffusion model adapted from Qwen2.5-Instruct (the checkpoint's ``modeling.py``): the Qwen2
layer (RMSNorm, Q/K/V with bias, O without, GQA, ``head_dim = hidden_size / heads``, HF RoPE with
cos/sin cast to the activation dtype, SwiGLU), ``lm_head`` untied unless ``tie_word_embeddings``.
Attention at inference is block-causal over blocks of ``bd_size`` (32) counted from position 0
(its ``eval_mask``: query block ≥ key block). Logits are shifted as in the AR model it comes from:
position i is predicted from the hidden state at i − 1 (``logit_shift = 1``), so the first token of
each block is predicted from the previous block's last position — the reference decodes it
autoregressively when that block is complete (the ``fast-dllm-v2`` sampler does the same).

Keys: ``model.embed_tokens``, ``model.layers.N.{input_layernorm, self_attn.{q,k,v,o}_proj,
post_attention_layernorm, mlp.{gate,up,down}_proj}``, ``model.norm``, ``lm_head``. The mask id is
not in config.json: the tokenizer's ``|<MASK>|``, 151665, unless the config names ``mask_token_id``.
"""

from __future__ import annotations

from ..core.architecture import DecoderModel, LayerParts
from ..core.validators import check_config_fields, with_defaults
from .dream import DreamLayer
from .hf_layout import HFDecoderLayout, set_dimensions

#: config.json fields this adapter reads and their defaults (Fast_dLLM_v2_7B's values)
FAST_DLLM_V2_CONFIG_DEFAULTS = {
    "hidden_size": 3584,
    "intermediate_size": 18944,
    "num_hidden_layers": 28,
    "num_attention_heads": 28,
    "num_key_value_heads": 4,
    "vocab_size": 152064,
    "rms_norm_eps": 1e-6,
    "rope_theta": 1000000.0,
    "max_position_embeddings": 32768,
    "bd_size": 32,
    "mask_token_id": 151665,
    "eos_token_id": 151645,
    "pad_token_id": None,
}


class FastDLLMv2Model(HFDecoderLayout, DecoderModel):
    #: HF ``architectures`` names this adapter loads
    architectures = ("Fast_dLLM_QwenForCausalLM",)
    family = "fast-dllm-v2"
    logit_shift = 1
    rope_full_precision = False
    block_causal = True
    default_cache = "block-kv"

    def __init__(self, config: dict):
        super().__init__()
        c = with_defaults(FAST_DLLM_V2_CONFIG_DEFAULTS, config)
        check_config_fields(c, positive=("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                                         "num_key_value_heads", "vocab_size", "max_position_embeddings", "bd_size"),
                            numbers=("rope_theta", "rms_norm_eps"), token_ids=("mask_token_id", "eos_token_id", "pad_token_id"),
                            vocab=c.get("vocab_size"))
        if c.get("rope_scaling") is not None:
            raise ValueError(f"config.json: rope_scaling={c['rope_scaling']!r} is not supported (Fast-dLLM v2 uses none)")
        if c.get("use_sliding_window") or any(t != "full_attention" for t in c.get("layer_types") or ()):
            raise ValueError("config.json: sliding-window layers are not supported (Fast-dLLM v2 uses full attention"
                             f" in every layer; use_sliding_window={c.get('use_sliding_window')!r})")
        if c.get("hidden_act", "silu") != "silu":
            raise ValueError(f"config.json: hidden_act={c['hidden_act']!r} is not supported (Fast-dLLM v2 uses silu)")
        set_dimensions(self, c)
        self.block_size = c["bd_size"]
        eps = c["rms_norm_eps"]
        self.build_outer((DreamLayer(self.d_model, self.n_heads, self.n_kv_heads, self.d_ff, eps)
                          for _ in range(self.n_layers)), eps)

    def layer(self, index: int) -> LayerParts:
        m = self.model.layers[index].mlp
        return LayerParts(*self.attention_parts(index), m.gate_proj, m.up_proj, m.down_proj)
