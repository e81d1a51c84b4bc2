"""``dynamic-dllm chat``: the first answer equals ``dd.generate`` on the same prompt (chat template),
streamed block by block; EOF ends the session."""

from __future__ import annotations

import dynamic_dllm as dd
from dynamic_dllm.cli import main


def test_chat_first_turn_equals_generate(tiny_lm, monkeypatch, capsys):
    prompt = "swap case: JuLOTmu FqiAoF kWE MImwn fu xjWR UsUt qITfWV"
    lines = iter([prompt])

    def fake_input(_prompt=""):
        try:
            return next(lines)
        except StopIteration:
            raise EOFError from None

    monkeypatch.setattr("builtins.input", fake_input)
    assert main(["chat", "--cache", "dual", "--gen-length", "64"]) == 0
    printed = capsys.readouterr().out.strip()
    out = dd.generate(tiny_lm, [prompt], cache="dual", gen_length=64, block_length=32, steps=64)
    tokens = out.tokens[0].tolist()
    tokens = tokens[:tokens.index(tiny_lm.model.eos_id)] if tiny_lm.model.eos_id in tokens else tokens
    assert printed == tiny_lm.tokenizer.decode(tokens, skip_special_tokens=True)
