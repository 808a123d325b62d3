"""SAM 2.1 behind `Segmenter` on a tiny random Sam2Model: embed once, decode per prompt, refinement, the cache,
prefetch, masks in original pixels, loading a checkpoint folder."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from huggingface_hub import constants
from safetensors.torch import load_file, save_file
from transformers import Sam2VideoConfig, Sam2VideoModel

from annotator.errors import ModelUnavailable
from annotator.project.images import load_image
from annotator.segmentation.segment import Segmenter
from tests.test_images import _jpeg_with_orientation
from tests.tiny_sam2 import LOW_RES, ForwardSpy, build_tiny_sam2, plant_box_decoder

BOX = (20.0, 30.0, 100.0, 90.0)


def _image(seed: int, height: int = 120, width: int = 200) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(height, width, 3), dtype=np.uint8)


@pytest.fixture
def backend():
    return build_tiny_sam2()


@pytest.fixture
def segmenter(backend):
    with Segmenter(backend) as s:
        yield s


def test_a_box_prompt_gives_a_mask_of_the_non_square_image_size_and_low_res_logits(segmenter):
    result = segmenter.segment_box("a", _image(1), BOX)
    assert result.mask.shape == (120, 200)
    assert result.mask.dtype == bool
    assert result.low_res_logits.shape == (1, LOW_RES, LOW_RES)
    assert result.prompt_box_xyxy == BOX


def test_the_image_encoder_runs_once_per_image_however_many_prompts(backend, segmenter):
    encoder = ForwardSpy(backend.model.vision_encoder)
    image = _image(2)
    first = segmenter.segment_box("a", image, BOX)
    segmenter.segment_box("a", image, (0.0, 0.0, 50.0, 50.0))
    segmenter.refine("a", image, BOX, [[30.0, 40.0]], [1], previous=first)
    assert encoder.calls == 1


def test_a_prompt_on_a_prefetched_image_runs_only_the_decoder(backend, segmenter):
    segmenter.prefetch("a", _image(3)).result(timeout=10)
    encoder, decoder = ForwardSpy(backend.model.vision_encoder), ForwardSpy(backend.model.mask_decoder)
    segmenter.segment_box("a", _image(3), BOX)
    assert (encoder.calls, decoder.calls) == (0, 1)


def test_a_box_prompt_keeps_the_best_of_three_candidates_by_predicted_iou(backend, segmenter):
    image = _image(4)
    result = segmenter.segment_box("a", image, BOX)
    inputs = backend.image_processor(images=image, return_tensors="pt")
    scale = torch.tensor([128 / 200, 128 / 120, 128 / 200, 128 / 120])
    with torch.no_grad():
        out = backend.model(pixel_values=inputs["pixel_values"], input_boxes=(torch.tensor(BOX) * scale)[None, None])
    scores = out.iou_scores[0, 0]
    best = int(scores.argmax())
    assert scores.shape == (3,)
    assert result.score == pytest.approx(float(scores[best]))
    assert np.allclose(result.low_res_logits[0], out.pred_masks[0, 0, best].numpy(), atol=1e-4)


def test_refining_with_points_continues_from_the_previous_low_res_logits(backend, segmenter):
    image = _image(5)
    first = segmenter.segment_box("a", image, BOX)
    prompt = ForwardSpy(backend.model.prompt_encoder)
    refined = segmenter.refine("a", image, BOX, [[40.0, 50.0], [90.0, 80.0]], [1, 0], previous=first)
    seen = prompt.kwargs[-1]
    assert torch.equal(seen["input_masks"], torch.from_numpy(first.low_res_logits)[None])
    assert seen["input_labels"].tolist() == [[[1, 0]]]
    scale = torch.tensor([128 / 200, 128 / 120])  # the 200 x 120 image is stretched to the 128 x 128 input
    assert torch.allclose(seen["input_points"], torch.tensor([[[[40.0, 50.0], [90.0, 80.0]]]]) * scale)
    assert seen["input_boxes"] is not None
    assert not np.allclose(refined.low_res_logits, first.low_res_logits)


def test_the_cache_evicts_the_least_recently_used_embedding_at_its_bound(backend):
    encoder = ForwardSpy(backend.model.vision_encoder)
    with Segmenter(backend, cache_size=2) as segmenter:
        for image_id in ("a", "b", "a", "c"):
            segmenter.segment_box(image_id, _image(ord(image_id)), BOX)
        assert segmenter.cached_ids() == ["a", "c"]
        segmenter.segment_box("b", _image(ord("b")), BOX)
        assert encoder.calls == 4
        assert segmenter.cached_ids() == ["c", "b"]


def test_a_cancelled_queued_prefetch_never_runs_the_encoder(backend, segmenter):
    encoder = ForwardSpy(backend.model.vision_encoder, hold_first=True)
    running = segmenter.prefetch("a", _image(6))
    assert encoder.started.wait(timeout=10)
    queued = segmenter.prefetch("b", _image(7))
    assert segmenter.cancel_prefetch("b")
    encoder.release.set()
    running.result(timeout=10)
    assert queued.cancelled()
    assert encoder.calls == 1
    assert segmenter.cached_ids() == ["a"]


def test_a_planted_box_mask_lands_inside_the_prompt_box_of_a_non_square_image(backend, segmenter, monkeypatch):
    plant_box_decoder(backend.model, monkeypatch)
    result = segmenter.segment_box("a", _image(8, height=90, width=240), BOX)
    assert result.mask.shape == (90, 240)
    x0, y0, x1, y1 = result.box_xyxy
    assert BOX[0] <= x0 and BOX[1] <= y0 and x1 <= BOX[2] and y1 <= BOX[3]
    assert result.mask.sum() > 0.7 * (BOX[2] - BOX[0]) * (BOX[3] - BOX[1])
    assert not result.spills


def test_an_exif_rotated_image_gets_its_mask_in_the_displayed_pixels(backend, segmenter, monkeypatch, tmp_path):
    _jpeg_with_orientation(tmp_path / "turned.jpg", 6)  # stored 64 x 32, displayed 32 x 64
    image = load_image(tmp_path / "turned.jpg")
    plant_box_decoder(backend.model, monkeypatch)
    box = (4.0, 8.0, 28.0, 56.0)
    result = segmenter.segment_box("turned", image, box)
    assert result.mask.shape == (64, 32)
    x0, y0, x1, y1 = result.box_xyxy
    assert box[0] <= x0 and box[1] <= y0 and x1 <= box[2] and y1 <= box[3]


def test_a_saved_checkpoint_folder_loads_into_the_same_masks(backend, tmp_path):
    backend.model.save_pretrained(tmp_path)
    backend.image_processor.save_pretrained(tmp_path)
    image = _image(9)
    with Segmenter(backend) as reference, Segmenter.load("sam2.1-tiny", tmp_path, "cpu") as loaded:
        expected, got = reference.segment_box("a", image, BOX), loaded.segment_box("a", image, BOX)
    assert loaded.label == "SAM 2.1 tiny"
    assert np.array_equal(got.mask, expected.mask)


def test_loading_without_a_downloaded_checkpoint_names_the_preset_and_its_download(monkeypatch, tmp_path):
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    with pytest.raises(ModelUnavailable, match=r"no SAM 2.1 small checkpoint \(facebook/sam2.1-hiera-small\) in the "
                                               r"Hugging Face cache; download it first: annotator models download "
                                               r"sam2.1-small"):
        Segmenter.load("sam2.1-small", device="cpu")


def test_a_checkpoint_folder_of_another_family_is_refused_in_one_line(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "sam_hq"}))
    with pytest.raises(ModelUnavailable) as error:
        Segmenter.load("sam2.1-tiny", tmp_path, "cpu")
    assert str(error.value) == (
        f"{tmp_path} holds a 'sam_hq' checkpoint, not SAM 2.1 tiny ('sam2' or 'sam2_video'); choose the mask model "
        "that matches it"
    )


def test_a_released_checkpoint_saved_as_the_video_model_loads_its_image_model(backend, tmp_path):
    config = backend.model.config.to_dict()
    video_config = Sam2VideoConfig(**{key: config[key] for key in ("vision_config", "prompt_encoder_config",
                                                                   "mask_decoder_config")})  # fmt: skip
    video = Sam2VideoModel(video_config).eval()
    video.save_pretrained(tmp_path)
    backend.image_processor.save_pretrained(tmp_path)
    with Segmenter.load("sam2.1-tiny", tmp_path, "cpu") as loaded:
        result = loaded.segment_box("a", _image(10), BOX)
        decoder = loaded.backend.model.mask_decoder
    assert torch.equal(decoder.iou_token.weight, video.mask_decoder.iou_token.weight)
    assert result.mask.shape == (120, 200)


def test_a_checkpoint_missing_weights_is_refused_naming_the_folder_and_what_is_missing(backend, tmp_path):
    backend.model.save_pretrained(tmp_path)
    backend.image_processor.save_pretrained(tmp_path)
    weights = load_file(tmp_path / "model.safetensors")
    del weights["mask_decoder.iou_token.weight"]
    save_file(weights, tmp_path / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(ModelUnavailable, match=rf"SAM 2.1 tiny checkpoint {tmp_path} does not fit: 1 weights missing "
                                               r"\(first: mask_decoder.iou_token.weight\); download it again"):
        Segmenter.load("sam2.1-tiny", tmp_path, "cpu")
