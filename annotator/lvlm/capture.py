"""Last-token attention captured inside the text model's own attention call, and the early exit after a layer.

The capture is an attention function registered with transformers' `AttentionInterface` under `CAPTURE_ATTENTION`
(with the stock SDPA mask function registered under the same name in `AttentionMaskInterface`, so cached prefixes
get their causal mask). It returns the stock SDPA output unchanged and, for the layers that hold requested heads,
also computes one softmax row: the last query against the keys the layer really used (RoPE applied, the whole
cache included, grouped-query heads mapped to their key head, the mask's last row applied), in float32.
No `output_attentions=True`, no eager attention, no `N x N` matrix.

Which heads to capture and where to put the rows travels with each forward call as the keyword argument
`last_token_capture` (transformers passes unknown keyword arguments down to the attention function), so there
is no global state and two engines never see each other's requests.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Iterator

import torch

CAPTURE_ATTENTION = "annotator_last_token"
CAPTURE_KWARG = "last_token_capture"


@dataclass
class LastTokenCapture:
    """Request and result of one forward: `heads_by_layer` maps a layer index to the head indices to capture;
    `key_positions` selects the image positions among the keys (absolute positions in the whole sequence, cache
    included). After the forward, `rows[layer]` is a float32 `[len(heads), len(key_positions)]` tensor."""

    heads_by_layer: dict[int, list[int]]
    key_positions: slice
    rows: dict[int, torch.Tensor] = field(default_factory=dict)


def last_token_attention(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float | None = None,
    dropout: float = 0.0,
    **kwargs,
) -> tuple[torch.Tensor, None]:
    """The stock SDPA attention, plus the last query's softmax row for the heads `last_token_capture` asks for.

    `query` is `[B, H, q, d]`; `key` and `value` are `[B, H_kv, kv, d]` (key-value heads, not repeated).
    """
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    capture: LastTokenCapture | None = kwargs.pop(CAPTURE_KWARG, None)
    output = sdpa_attention_forward(
        module, query, key, value, attention_mask, scaling=scaling, dropout=dropout, **kwargs
    )
    heads = capture.heads_by_layer.get(module.layer_idx) if capture is not None else None
    if heads:
        row = _last_row(query, key, attention_mask, scaling, heads)
        capture.rows[module.layer_idx] = row[0, :, capture.key_positions]
    return output


def _last_row(
    query: torch.Tensor, key: torch.Tensor, attention_mask: torch.Tensor | None, scaling: float | None, heads: list[int]
) -> torch.Tensor:
    """Softmax over all keys of the last query of each head in `heads` -> float32 `[B, len(heads), kv]`."""
    group = query.shape[1] // key.shape[1]
    index = torch.as_tensor(heads, device=query.device)
    scale = query.shape[-1] ** -0.5 if scaling is None else scaling
    q = query[:, index, -1, :].float()
    k = key[:, torch.div(index, group, rounding_mode="floor")].float()
    scores = torch.einsum("bhd,bhsd->bhs", q, k) * scale
    if attention_mask is not None:
        mask_row = attention_mask[:, :, -1, -k.shape[2] :]
        if mask_row.shape[1] > 1:
            mask_row = mask_row[:, index]
        if mask_row.dtype == torch.bool:
            scores = scores.masked_fill(~mask_row, float("-inf"))
        else:
            scores = scores + mask_row.float()
    return torch.softmax(scores, dim=-1)


def register_capture_attention() -> None:
    """Register `last_token_attention` and the SDPA mask under `CAPTURE_ATTENTION` (idempotent)."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    AttentionInterface.register(CAPTURE_ATTENTION, last_token_attention)
    AttentionMaskInterface.register(CAPTURE_ATTENTION, sdpa_mask)


class _StopForward(Exception):
    """Raised by a forward hook to end a forward pass right after a chosen layer."""


def _raise_stop(module: torch.nn.Module, args: tuple, output: object) -> None:
    raise _StopForward


@contextmanager
def stop_after(layer: torch.nn.Module) -> Iterator[None]:
    """Inside the block, a forward pass ends as soon as `layer` has run (later layers, norm and head never run)."""
    handle = layer.register_forward_hook(_raise_stop)
    try:
        yield
    except _StopForward:
        pass
    finally:
        handle.remove()
