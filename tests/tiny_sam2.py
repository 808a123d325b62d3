"""Tiny transformers mask models for mechanics tests: SAM 2.1 (`Sam2Model`) and SAM-HQ (`SamHQModel`), random weights.

Both take a 128 px input (an 8 x 8 image embedding, 32 x 32 low-res logits) with prompt and decoder width 32:
SAM 2.1 a 5-block Hiera of widths 16-128 (~0.35 M parameters), SAM-HQ a 2-block ViT of width 32 (~0.1 M); an
embedding takes ~20 ms on the CPU. `ForwardSpy` counts (and can hold) a module's forward calls; `plant_box_decoder`
makes the decoder answer with the prompt box itself, so where a mask lands in the image is known; `cache_tiny_sam2`
puts the tiny SAM 2.1 where SAM 2.1 tiny's download lands (the `hub_cache` fixture: an empty offline cache).
"""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
import torch
from transformers import (
    Sam2Config,
    Sam2ImageProcessor,
    Sam2Model,
    SamHQConfig,
    SamHQModel,
    SamImageProcessor,
)

from annotator.segmentation.sam2 import Sam2Backend
from annotator.segmentation.sam_hq import SamHQBackend
from tests.fake_hub import COMMIT

SAM2_TINY = "facebook/sam2.1-hiera-tiny"
"""SAM 2.1 tiny's Hub repository, where `cache_tiny_sam2` puts the tiny model."""
INPUT = 128
LOW_RES = 32
WIDTH = 32
_DECODER = dict(hidden_size=WIDTH, mlp_dim=64, num_attention_heads=2, iou_head_hidden_dim=32)
_PROMPT = dict(hidden_size=WIDTH, image_size=INPUT, patch_size=16, mask_input_channels=8)


def build_tiny_sam2(seed: int = 0) -> Sam2Backend:
    """A SAM 2.1 back end on the CPU in eval mode, with weights drawn from `seed`."""
    config = Sam2Config(
        vision_config=dict(
            backbone_config=dict(
                model_type="sam2_hiera_det_model",
                hidden_size=16,
                image_size=[INPUT, INPUT],
                blocks_per_stage=[1, 1, 2, 1],
                embed_dim_per_stage=[16, 32, 64, 128],
                num_attention_heads_per_stage=[1, 1, 1, 1],
                window_size_per_stage=[4, 4, 2, 2],
                global_attention_blocks=[3],
                window_positional_embedding_background_size=[4, 4],
            ),
            backbone_channel_list=[128, 64, 32, 16],
            backbone_feature_sizes=[[32, 32], [16, 16], [8, 8]],
            fpn_hidden_size=WIDTH,
        ),
        prompt_encoder_config=_PROMPT,
        mask_decoder_config=_DECODER,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = Sam2Model(config)
    processor = Sam2ImageProcessor(size={"height": INPUT, "width": INPUT})
    return Sam2Backend(model.eval(), processor, "SAM 2.1 tiny (random)")


def build_tiny_sam_hq(seed: int = 0) -> SamHQBackend:
    """A SAM-HQ back end on the CPU in eval mode, with weights drawn from `seed`."""
    config = SamHQConfig(
        vision_config=dict(
            hidden_size=WIDTH,
            output_channels=WIDTH,
            num_hidden_layers=2,
            num_attention_heads=2,
            image_size=INPUT,
            patch_size=16,
            window_size=4,
            global_attn_indexes=[1],
            num_pos_feats=16,
            mlp_dim=64,
        ),
        prompt_encoder_config=_PROMPT,
        mask_decoder_config=dict(_DECODER, vit_dim=WIDTH),
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = SamHQModel(config)
    processor = SamImageProcessor(
        size={"longest_edge": INPUT},
        pad_size={"height": INPUT, "width": INPUT},
        mask_size={"longest_edge": LOW_RES},
        mask_pad_size={"height": LOW_RES, "width": LOW_RES},
    )
    return SamHQBackend(model.eval(), processor, "SAM-HQ (random)")


class ForwardSpy:
    """Counts a module's forward calls and keeps their keyword arguments; optionally holds the first call until
    `release` is set."""

    def __init__(self, module: torch.nn.Module, hold_first: bool = False) -> None:
        self.calls = 0
        self.kwargs: list[dict] = []
        self.started = threading.Event()
        self.release = threading.Event()
        self.hold_first = hold_first
        self._forward = module.forward
        self._lock = threading.Lock()
        module.forward = self

    def __call__(self, *args, **kwargs):
        with self._lock:
            self.calls += 1
            first = self.calls == 1
            self.kwargs.append(kwargs)
        self.started.set()
        if self.hold_first and first:
            assert self.release.wait(timeout=10)
        return self._forward(*args, **kwargs)


def plant_box_decoder(model: torch.nn.Module, monkeypatch) -> None:
    """Make `model` answer every box prompt with the box itself: the decoder's low-res logits are +10 on the cells
    lying wholly inside the prompt box (in the model's input frame) and -10 elsewhere, for each candidate, the
    second candidate scored best."""
    prompt_spy = ForwardSpy(model.prompt_encoder)
    decoder = model.mask_decoder.forward

    def planted(*args, **kwargs):
        outputs = decoder(*args, **kwargs)
        masks, scores = outputs[0], outputs[1]
        x0, y0, x1, y1 = (prompt_spy.kwargs[-1]["input_boxes"][0, 0] * LOW_RES / INPUT).tolist()
        cells = torch.arange(LOW_RES, dtype=torch.float32)
        inside_x = (cells >= x0) & (cells + 1 <= x1)
        inside_y = (cells >= y0) & (cells + 1 <= y1)
        logits = torch.where(inside_y[:, None] & inside_x[None, :], 10.0, -10.0)
        planted_masks = logits.expand_as(masks).clone()
        planted_scores = torch.linspace(0.1, 0.2, scores.shape[-1]).expand_as(scores).clone()
        if planted_scores.shape[-1] > 1:
            planted_scores[..., 1] = 0.9
        return (planted_masks, planted_scores, *outputs[2:])

    monkeypatch.setattr(model.mask_decoder, "forward", planted)


def cache_tiny_sam2(hub_cache: Path, backend: Sam2Backend) -> None:
    """`backend`'s model and image processor in the Hugging Face cache folder `hub_cache` as SAM 2.1 tiny's Hub
    repository at `tests.fake_hub.COMMIT` (its `main`)."""
    repo = hub_cache / f"models--{SAM2_TINY.replace('/', '--')}"
    snapshot = repo / "snapshots" / COMMIT
    backend.model.save_pretrained(snapshot)
    backend.image_processor.save_pretrained(snapshot)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(COMMIT)


@pytest.fixture
def hub_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty Hugging Face cache (offline) and user cache under tmp_path; returns the Hub cache folder."""
    from huggingface_hub import constants

    folder = tmp_path / "hf" / "hub"
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(folder))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "user-cache"))
    return folder
