"""Segment Anything (SAM v1) through segment-anything: the official checkpoints and a `MaskBackend` for `Sam`.

Checkpoints are the official ones, loaded with `torch.load(..., weights_only=True)` into a model built by
`sam_model_registry` (whose own `checkpoint=` loading unpickles without that guard, so it is never used).
"""

from __future__ import annotations

import os
import pickle
import re
from pathlib import Path

import numpy as np
import torch
from segment_anything import SamPredictor, sam_model_registry
from segment_anything.modeling import Sam

from annotator.download import Progress, download, user_cache_dir
from annotator.errors import ModelUnavailable
from annotator.segmentation.backend import Candidates, ImageEmbedding, Prompt
from annotator.segmentation.catalog import SAM_CHECKPOINTS, CheckpointSpec


def _spec(model_type: str) -> CheckpointSpec:
    if model_type not in SAM_CHECKPOINTS:
        raise ModelUnavailable(f"unknown SAM model type {model_type!r}; use one of {', '.join(SAM_CHECKPOINTS)}")
    return SAM_CHECKPOINTS[model_type]


def checkpoint_path(model_type: str) -> Path:
    """Where the official checkpoint of `model_type` lives in the user's cache folder (`.../annotator/sam/`)."""
    return user_cache_dir() / "sam" / _spec(model_type).filename


def download_checkpoint(model_type: str, progress: Progress | None = None) -> Path:
    """Fetch the official checkpoint of `model_type` into `checkpoint_path(model_type)` unless it is there.

    The download is resumable and verified (size and SHA-256); see `annotator.download.download`.
    """
    spec = _spec(model_type)
    path = checkpoint_path(model_type)
    if path.is_file():
        return path
    return download(spec.url, path, size_bytes=spec.size_bytes, sha256=spec.sha256, progress=progress)


def load_checkpoint(sam: Sam, checkpoint: str | os.PathLike[str]) -> Sam:
    """Load a SAM checkpoint file into `sam` (built with the matching shapes) and return it.

    The file must be a plain state dict of tensors whose keys and shapes are exactly `sam`'s. A truncated or
    unreadable file, a pickle that would run code, or keys and shapes that do not fit raise `ModelUnavailable`
    naming the file and what is wrong; nothing in the file is executed.
    """
    path = Path(checkpoint)
    return _apply_state_dict(sam, _read_state_dict(path), path)


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise ModelUnavailable(f"SAM checkpoint {path} does not exist")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        refused = re.findall(r"Unsupported global: GLOBAL (\S+)", str(exc))
        if refused:
            raise ModelUnavailable(
                f"SAM checkpoint {path} was refused: it is a pickle that calls {', '.join(refused)} when loaded, "
                f"which could run code; only plain weight files are loaded"
            ) from None
        unpickler = re.search(r"WeightsUnpickler error:\s*(.+?)\s*(\n\n|$)", str(exc), re.S)
        reason = " ".join(unpickler.group(1).split()) if unpickler else _first_line(exc)
        raise ModelUnavailable(_unreadable_checkpoint(path, reason)) from exc
    except Exception as exc:  # the unpickler fails on a damaged file with any error type (IndexError, EOFError...)
        raise ModelUnavailable(_unreadable_checkpoint(path, f"{type(exc).__name__}: {_first_line(exc)}")) from exc
    if not isinstance(state, dict) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()
    ):
        raise ModelUnavailable(f"SAM checkpoint {path} holds a {type(state).__name__}, not a state dict of tensors")
    return state


def _apply_state_dict(sam: Sam, state: dict[str, torch.Tensor], path: Path) -> Sam:
    expected = sam.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    misshapen = [
        f"{k} {tuple(state[k].shape)} instead of {tuple(expected[k].shape)}"
        for k in expected
        if k in state and state[k].shape != expected[k].shape
    ]
    problems = [
        f"{len(names)} {what} (first: {', '.join(names[:3])})"
        for what, names in (("keys missing", missing), ("unexpected keys", unexpected), ("shapes differ", misshapen))
        if names
    ]
    if problems:
        raise ModelUnavailable(f"SAM checkpoint {path} does not fit this SAM model: {'; '.join(problems)}")
    sam.load_state_dict(state, strict=True)
    return sam


def _unreadable_checkpoint(path: Path, reason: str) -> str:
    return (
        f"SAM checkpoint {path} cannot be read: it is truncated or not a PyTorch checkpoint ({reason}); "
        "download it again"
    )


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


class SamV1Backend:
    """A segment-anything `Sam` as a `MaskBackend`: `SamPredictor` embeds the image (longest side resized to the
    model's input, padded) and decodes prompts on the cached features."""

    def __init__(self, sam: Sam, label: str = "SAM") -> None:
        self.sam = sam.eval()
        self.label = label

    @property
    def device(self) -> torch.device:
        return self.sam.device

    def embed(self, image: np.ndarray) -> ImageEmbedding:
        predictor = SamPredictor(self.sam)
        predictor.set_image(image)
        return ImageEmbedding(
            features=(predictor.features.float(),),
            original_size=tuple(predictor.original_size),
            input_size=tuple(predictor.input_size),
        )

    def decode(self, embedding: ImageEmbedding, prompt: Prompt) -> Candidates:
        # A light predictor per call, restored from the cached embedding through the attributes that
        # `SamPredictor.set_image` sets; the model itself is shared and only read.
        predictor = SamPredictor(self.sam)
        predictor.features = embedding.features[0]
        predictor.original_size = embedding.original_size
        predictor.input_size = embedding.input_size
        predictor.is_image_set = True
        masks, scores, low_res = predictor.predict(
            point_coords=prompt.points,
            point_labels=prompt.labels,
            box=prompt.box,
            mask_input=prompt.mask_input,
            multimask_output=prompt.multimask,
        )
        return Candidates(masks=masks, scores=scores, low_res_logits=low_res)


def load_sam_v1(model_type: str, checkpoint: str | os.PathLike[str] | None, device: torch.device) -> SamV1Backend:
    """SAM `model_type` ("vit_h", "vit_l", "vit_b") with its weights, from `checkpoint` or the downloaded file."""
    _spec(model_type)
    if checkpoint is None:
        path = checkpoint_path(model_type)
        if not path.is_file():
            raise ModelUnavailable(
                f"no SAM {model_type} checkpoint at {path}; download it first (annotator models download "
                f"sam-{model_type}, or download_checkpoint({model_type!r}) fetches {SAM_CHECKPOINTS[model_type].url})"
            )
    else:
        path = Path(checkpoint)
    sam = _apply_state_dict(sam_model_registry[model_type](), _read_state_dict(path), path)
    return SamV1Backend(sam.to(device), label=f"SAM {model_type}")
