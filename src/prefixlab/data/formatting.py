"""Turning examples into token ids: the prompt (source) and the target, with truncation.

``chat``: the instruction and the source as one user turn of the model's chat template,
the target as the assistant's reply (ends with the template's end-of-turn token).
``plain``: ``instruction / source / answer cue`` as text, the target after a space,
then EOS: the form of the original prefix-tuning code, for base models such as GPT-2.
``source``: for encoder-decoders (BART, T5), the source alone is the encoder input and
the target the decoder's, each with the tokenizer's own special tokens.
The same prompt serves the prefix-tuned model and the zero-shot baseline, so the
baseline differs only by the missing prefix.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class PromptFormatter:
    tokenizer: object
    instruction: str
    answer_cue: str
    style: str = "auto"
    max_source_tokens: int = 256
    max_target_tokens: int = 32
    is_encoder_decoder: bool = False

    def __post_init__(self) -> None:
        if self.style == "auto":
            if self.is_encoder_decoder:
                self.style = "source"
            else:
                self.style = "chat" if getattr(self.tokenizer, "chat_template", None) else "plain"
        if self.style == "chat" and not getattr(self.tokenizer, "chat_template", None):
            raise ValueError("task.prompt_style=chat but the tokenizer has no chat template; use task.prompt_style=plain")

    def _truncated_source(self, source: str) -> str:
        ids = self.tokenizer(source, add_special_tokens=False)["input_ids"]
        if len(ids) <= self.max_source_tokens:
            return source
        # Cut at the token limit, then back off while the cut text is not a clean prefix: a cut
        # inside a multi-byte character decodes to U+FFFD, and re-encoding such text can take
        # more tokens than the limit.
        keep = self.max_source_tokens
        while keep > 0:
            text = self.tokenizer.decode(ids[:keep])
            clean = not text.endswith("\ufffd") or source.startswith(text)
            if clean and len(self.tokenizer(text, add_special_tokens=False)["input_ids"]) <= self.max_source_tokens:
                return text
            keep -= 1
        return ""

    def prompt_ids(self, source: str) -> list[int]:
        source = self._truncated_source(source)
        if self.style == "source":
            return self.tokenizer(source, add_special_tokens=True)["input_ids"]
        if self.style == "chat":
            text = self.tokenizer.apply_chat_template(
                [{"role": "user", "content": f"{self.instruction}\n\n{source}"}],
                add_generation_prompt=True,
                tokenize=False,
            )
            return self.tokenizer(text, add_special_tokens=False)["input_ids"]
        ids = self.tokenizer(f"{self.instruction}\n\n{source}\n\n{self.answer_cue}", add_special_tokens=False)["input_ids"]
        bos = self.tokenizer.bos_token_id
        return ([bos] if bos is not None and bos != self.tokenizer.eos_token_id else []) + ids

    def target_ids(self, target: str) -> list[int]:
        if self.style == "source":
            eos = self.tokenizer.eos_token_id
            ids = self.tokenizer(target, add_special_tokens=True)["input_ids"]
            ids = ids[:-1] if ids and ids[-1] == eos else ids  # some tokenizers add EOS, some do not
            return ids[: self.max_target_tokens] + [eos]
        text = target if self.style == "chat" else " " + target
        ids = self.tokenizer(text, add_special_tokens=False)["input_ids"][: self.max_target_tokens]
        return ids + [self.tokenizer.eos_token_id]
