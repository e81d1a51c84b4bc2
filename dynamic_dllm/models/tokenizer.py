"""A byte-level tokenizer for the shipped and test checkpoints, saved in HF format.

Every byte is one token (256 ids, GPT-2 byte-to-unicode alphabet, no merges), followed by the
special tokens LLaDA's chat format uses. Saved with ``save_pretrained`` it is a plain
``tokenizer.json`` + ``tokenizer_config.json`` (with a chat template) that
``transformers.AutoTokenizer.from_pretrained`` loads like any real checkpoint's tokenizer.
"""

from __future__ import annotations

from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

BOS, EOS, MASK = "<|startoftext|>", "<|endoftext|>", "<|mdm_mask|>"
START_HEADER, END_HEADER, EOT = "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"
SPECIAL_TOKENS = (BOS, EOS, MASK, START_HEADER, END_HEADER, EOT)

#: LLaDA-Instruct's chat layout: <BOS><start>role<end>\n\ncontent<eot> ... <start>assistant<end>\n\n
CHAT_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n' + message['content'] + '<|eot_id|>' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"
)


#: SDAR's (Qwen3's) special tokens: EOS = pad = ``<|endoftext|>``, ChatML turns, mask ``<|MASK|>``
QWEN_EOS, IM_START, IM_END, QWEN_MASK = "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|MASK|>"
QWEN_SPECIAL_TOKENS = (QWEN_EOS, IM_START, IM_END, QWEN_MASK)
#: ChatML as SDAR's template writes it (without the thinking-mode branches)
QWEN_CHAT_TEMPLATE = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


#: DiffuCoder's (Dream-architecture coder) special tokens: Dream's ``<|mask|>`` and the ``<|dlm_pad|>``
#: its tokenizer pads with (and the model writes after its answer)
DREAM_MASK, DLM_PAD = "<|mask|>", "<|dlm_pad|>"
DIFFUCODER_SPECIAL_TOKENS = (QWEN_EOS, IM_START, IM_END, DREAM_MASK, DLM_PAD)


def build_byte_tokenizer(style: str = "llada") -> PreTrainedTokenizerFast:
    """Byte-level tokenizer: ids 0..255 are bytes, then the family's special tokens in order —
    :data:`SPECIAL_TOKENS` and LLaDA's chat template (``style="llada"``, also used for Dream's test
    checkpoints), :data:`QWEN_SPECIAL_TOKENS` and ChatML (``style="qwen"``, SDAR, Fast-dLLM v2), or
    :data:`DIFFUCODER_SPECIAL_TOKENS`, ChatML and pad ``<|dlm_pad|>`` (``style="diffucoder"``)."""
    if style == "diffucoder":
        tok = _byte_level(DIFFUCODER_SPECIAL_TOKENS)
        return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=QWEN_EOS, pad_token=DLM_PAD, mask_token=DREAM_MASK,
                                       additional_special_tokens=[IM_START, IM_END], chat_template=QWEN_CHAT_TEMPLATE,
                                       padding_side="left")
    if style == "qwen":
        tok = _byte_level(QWEN_SPECIAL_TOKENS)
        return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=QWEN_EOS, pad_token=QWEN_EOS, mask_token=QWEN_MASK,
                                       additional_special_tokens=[IM_START, IM_END], chat_template=QWEN_CHAT_TEMPLATE,
                                       padding_side="left")
    if style != "llada":
        raise ValueError(f"unknown tokenizer style {style!r}; known: llada, qwen, diffucoder")
    tok = _byte_level(SPECIAL_TOKENS)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=BOS,
        eos_token=EOS,
        pad_token=EOS,
        mask_token=MASK,
        additional_special_tokens=[START_HEADER, END_HEADER, EOT],
        chat_template=CHAT_TEMPLATE,
        padding_side="left",
    )


def _byte_level(specials: tuple) -> Tokenizer:
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    byte_to_unicode = sorted(alphabet, key=lambda ch: _byte_of(ch))
    vocab = {ch: i for i, ch in enumerate(byte_to_unicode)}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens(list(specials))
    return tok


def _byte_of(ch: str) -> int:
    """Inverse of GPT-2's bytes_to_unicode: printable bytes map to themselves, the others to 256+."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    code = ord(ch)
    if code in printable:
        return code
    others = [b for b in range(256) if b not in printable]
    return others[code - 256]


def save_tokenizer(folder: Path) -> PreTrainedTokenizerFast:
    tok = build_byte_tokenizer()
    tok.save_pretrained(str(folder))
    return tok
