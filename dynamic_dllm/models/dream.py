"""Dream (Dream-v0-7B, Qwen2.5 layout) as a native module — no ``trust_remote_code``.

Qwen2 layer: RMSNorm (eps from config, 1e-6), Q/K/V with bias, O without, GQA, HF RoPE
(``rope_theta`` 1e6; cos/sin cast to the activation dtype), SwiGLU MLP, untied ``lm_head``.
Dream is initialised from an AR model, so its samplers shift logits one position right:
position i is predicted from the hidden state at i-1 (``logit_shift = 1``).
Keys: ``model.embed_tokens``, ``model.layers.N.{input_layernorm, self_attn.{q,k,v,o}_proj,
post_attention_layernorm, mlp.{gate,up,down}_proj}``, ``model.norm``, ``lm_head``.
"""

from __future__ import annotations

from torch import nn

from ..core.architecture import DecoderModel, LayerParts, RMSNorm
from ..core.moe import SwiGLU
from ..core.validators import check_config_fields, with_defaults
from .hf_layout import HFDecoderLayout, set_dimensions

DREAM_CONFIG_DEFAULTS = {
    "hidden_size": 3584,
    "intermediate_size": 18944,
    "num_hidden_layers": 28,
    "num_attention_heads": 28,
    "num_key_value_heads": 4,
    "vocab_size": 152064,
    "rms_norm_eps": 1e-6,
    "rope_theta": 1000000.0,
    "max_position_embeddings": 32768,
    "mask_token_id": 151666,
    "eos_token_id": 151643,
    "pad_token_id": 151643,
}


class DreamAttention(nn.Module):
    def __init__(self, d: int, n_heads: int, n_kv_heads: int):
        super().__init__()
        kv = n_kv_heads * (d // n_heads)
        self.q_proj = nn.Linear(d, d, bias=True)
        self.k_proj = nn.Linear(d, kv, bias=True)
        self.v_proj = nn.Linear(d, kv, bias=True)
        self.o_proj = nn.Linear(d, d, bias=False)


class DreamLayer(nn.Module):
    def __init__(self, d: int, n_heads: int, n_kv_heads: int, d_ff: int, eps: float):
        super().__init__()
        self.input_layernorm = RMSNorm(d, eps)
        self.self_attn = DreamAttention(d, n_heads, n_kv_heads)
        self.post_attention_layernorm = RMSNorm(d, eps)
        self.mlp = SwiGLU(d, d_ff)


#: transformers' ``PretrainedConfig`` generation defaults that a Dream ``config.json`` inherits
INHERITED_SAMPLING = {"top_k": 50, "top_p": 1.0}


def diffusion_generate_defaults(config: dict) -> dict:
    """``top_k`` / ``top_p`` of Dream's ``diffusion_generate`` when the caller passes none: it builds
    ``DreamGenerationConfig.from_model_config(model.config)``, so each is ``config.json``'s value
    (``null``: dropped, i.e. no filter), else the inherited ``PretrainedConfig`` default (top_k 50,
    top_p 1.0 = off). ``generation_config.json`` is not read for them."""
    return {key: config[key] if key in config else inherited for key, inherited in INHERITED_SAMPLING.items()}


class DreamModel(HFDecoderLayout, DecoderModel):
    #: HF ``architectures`` names this adapter loads (the loader dispatches on them first)
    architectures = ("DreamModel",)
    family = "dream"
    logit_shift = 1
    rope_full_precision = False

    def __init__(self, config: dict):
        super().__init__()
        c = with_defaults(DREAM_CONFIG_DEFAULTS, config)
        check_config_fields(c, positive=("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                                         "num_key_value_heads", "vocab_size", "max_position_embeddings"),
                            numbers=("rope_theta", "rms_norm_eps"), token_ids=("mask_token_id", "eos_token_id", "pad_token_id"),
                            vocab=c.get("vocab_size"))
        self.sampling_defaults = diffusion_generate_defaults(config)
        if c.get("tie_word_embeddings", False):
            raise ValueError("tie_word_embeddings=true is not supported: Dream checkpoints have an untied lm_head")
        set_dimensions(self, c)
        eps = c["rms_norm_eps"]
        self.build_outer((DreamLayer(self.d_model, self.n_heads, self.n_kv_heads, self.d_ff, eps)
                          for _ in range(self.n_layers)), eps)

    def layer(self, index: int) -> LayerParts:
        m = self.model.layers[index].mlp
        return LayerParts(*self.attention_parts(index), m.gate_proj, m.up_proj, m.down_proj)
