"""CLIP prompt encoding as sd-scripts does it: clip skip and kohya's long prompts (max_token_length 150/225).

A long caption is tokenized to n·(window−2)+2 tokens (window = the tokenizer's `model_max_length`, 77 for the real
models; n = max_token_length / 75), cut into n windows that each start with the caption's BOS and end with an
EOS (or pad), encoded as n separate sequences and joined again: the first BOS, every window's inner tokens and the
last window's last position — 77, 152 or 227 positions for the real models. Followed: sd-scripts
`library/strategy_base.py` TokenizeStrategy._get_input_ids, `library/strategy_sd.py`
SdTextEncodingStrategy.encode_tokens, `library/strategy_sdxl.py` SdxlTextEncodingStrategy._get_hidden_states_sdxl
(the same code as `train_util.get_hidden_states` / `get_hidden_states_sdxl`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from ..errors import ConfigError

CHUNK_TOKENS = 75  # max_token_length counts caption tokens in 75s: one window of a real CLIP (77 − BOS − EOS)


@dataclass(frozen=True)
class PromptEncoding:
    """How captions become text-encoder outputs (train.clip_skip, train.max_token_length), unset = the defaults."""

    clip_skip: int = 1  # 1 = the last layer's output
    max_token_length: int = CHUNK_TOKENS  # 75 = one window, as plain diffusers

    @classmethod
    def from_settings(cls, clip_skip: int | None, max_token_length: int | None) -> "PromptEncoding":
        """From the config's values; None means the default (sd-scripts' None ≡ clip_skip 1 ≡ max_token_length 75:
        the kohya_ss GUI passes 75 and 1, which encode exactly as None)."""
        return cls(clip_skip or 1, max_token_length or CHUNK_TOKENS)

    @property
    def windows(self) -> int:
        """Encoder windows per caption: 1, 2 or 3."""
        return max(1, self.max_token_length // CHUNK_TOKENS)

    def cache_tag(self) -> str:
        """Part of the text cache key: empty at the defaults (existing caches stay valid), else both settings."""
        if self == PromptEncoding():
            return ""
        return f"clip_skip={self.clip_skip};max_token_length={self.max_token_length}"


def window_ids(tokenizer: Any, captions: list[str], windows: int) -> torch.Tensor:
    """Token ids (batch, windows, window) of captions, as sd-scripts' `_get_input_ids` cuts them.

    A tokenizer whose pad is not its EOS (SD2, SDXL's second) ends a window cut inside the caption with EOS and
    starts an empty window with BOS EOS, as sd-scripts does."""
    size = tokenizer.model_max_length
    inner = size - 2
    length = size if windows == 1 else windows * inner + 2
    ids = tokenizer(captions, padding="max_length", max_length=length, truncation=True, return_tensors="pt").input_ids
    if windows == 1:
        return ids.unsqueeze(1)
    eos, pad = tokenizer.eos_token_id, tokenizer.pad_token_id
    out = []
    for k in range(windows):
        window = torch.cat([ids[:, :1], ids[:, 1 + k * inner : 1 + (k + 1) * inner], ids[:, -1:]], dim=1)
        if pad != eos:
            cut = (window[:, -2] != eos) & (window[:, -2] != pad)
            window[:, -1] = torch.where(cut, eos, window[:, -1])
            window[:, 1] = torch.where(window[:, 1] == pad, eos, window[:, 1])
        out.append(window)
    return torch.stack(out, dim=1)


def join_windows(hidden: torch.Tensor, batch: int) -> torch.Tensor:
    """(batch·windows, window, dim) → (batch, windows·(window−2)+2, dim): the first window's BOS, every window's
    inner positions, the last window's last position.

    sd-scripts' SD2 branch also means to copy a pad state over an empty window's leading EOS, but it compares a
    token id with the EOS *string*, which is never equal, so it joins exactly like SD1 (and SDXL, which disabled it)."""
    size, dim = hidden.shape[1], hidden.shape[-1]
    hidden = hidden.reshape(batch, -1, size, dim)
    if hidden.shape[1] == 1:
        return hidden[:, 0]
    inner = hidden[:, :, 1:-1].reshape(batch, -1, dim)
    return torch.cat([hidden[:, 0, :1], inner, hidden[:, -1, -1:]], dim=1)


def final_layer_norm(encoder: torch.nn.Module) -> torch.nn.Module:
    """The encoder's final LayerNorm (transformers 5's CLIPTextModel has no `text_model` level)."""
    return getattr(encoder, "text_model", encoder).final_layer_norm


def skipped_hidden_states(encoder: torch.nn.Module, ids: torch.Tensor, clip_skip: int) -> torch.Tensor:
    """The output `clip_skip` layers from the end, through the final LayerNorm (sd-scripts: hidden_states[-n] then
    final_layer_norm; 1 is the plain last hidden state)."""
    if clip_skip == 1:
        return encoder(ids)[0]
    states = encoder(ids, output_hidden_states=True).hidden_states
    if clip_skip > len(states):
        layers = len(states) - 1
        raise ConfigError([f"train.clip_skip = {clip_skip}: the text encoder has only {layers} layers"],
                          f"set train.clip_skip to at most {layers} (2 = the penultimate layer)")
    return final_layer_norm(encoder)(states[-clip_skip])


def eos_pooled(encoder: torch.nn.Module, last_hidden: torch.Tensor, ids: torch.Tensor, eos: int) -> torch.Tensor:
    """SDXL's pooled embedding: the last hidden state at each sequence's first EOS, projected (sd-scripts'
    `_pool_workaround`, the position transformers' CLIP pools for these tokenizers too)."""
    index = (ids == eos).int().argmax(dim=1).to(last_hidden.device)
    pooled = last_hidden[torch.arange(last_hidden.shape[0], device=last_hidden.device), index]
    projection = encoder.text_projection
    return projection(pooled.to(projection.weight.dtype)).to(last_hidden.dtype)
