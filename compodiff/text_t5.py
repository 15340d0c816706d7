"""The optional second text encoder of the paper's CLIP + T5 variant: T5 encoder states per token.

Loaded through transformers' ``T5EncoderModel.from_pretrained`` from a local
directory or hub id (``google/t5-v1_1-xl`` in the paper profile, 2048-d); the
denoiser projects these tokens and concatenates them to the CLIP text tokens.
"""

from __future__ import annotations

from pathlib import Path

import torch


class T5TextEncoder:
    def __init__(self, name_or_path: str | Path, max_length: int = 77, device: str = "cpu",
                 local_files_only: bool = True):
        from transformers import AutoTokenizer, T5EncoderModel

        try:
            self.tokenizer = AutoTokenizer.from_pretrained(str(name_or_path), local_files_only=local_files_only)
            self.model = T5EncoderModel.from_pretrained(str(name_or_path), local_files_only=local_files_only)
        except OSError as err:
            raise RuntimeError(f"could not load T5 encoder {name_or_path!r}: {err}") from err
        self.model.to(device).eval()
        self.max_length, self.device = max_length, torch.device(device)

    @property
    def width(self) -> int:
        return int(self.model.config.d_model)

    @torch.no_grad()
    def text_tokens(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, max_length, d_model) last hidden states and (B, max_length) bool mask of real tokens."""
        batch = self.tokenizer(list(texts), padding="max_length", truncation=True, max_length=self.max_length,
                               return_tensors="pt").to(self.device)
        out = self.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
        return out.last_hidden_state.float(), batch["attention_mask"].bool()
