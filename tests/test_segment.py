"""SAM masks on a tiny in-process SAM: prompts, refinement, the embedding cache, prefetch, checkpoint loading."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from segment_anything import SamPredictor

from annotator.errors import ModelUnavailable
from annotator.segmentation.segment import (
    SAM_CHECKPOINTS,
    CheckpointSpec,
    MaskResult,
    Segmenter,
    checkpoint_path,
    download_checkpoint,
    load_checkpoint,
)
from tests.test_download import PAYLOAD, PAYLOAD_SHA256, FileServer
from tests.tiny_sam import LOW_RES, build_tiny_sam

BOX = (20.0, 30.0, 100.0, 90.0)


def _image(seed: int, height: int = 120, width: int = 200) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(height, width, 3), dtype=np.uint8)


class EncoderSpy:
    """Counts image-encoder runs; optionally holds the first run until released, or meets a barrier."""

    def __init__(self, sam, hold_first: bool = False, barrier: threading.Barrier | None = None) -> None:
        self.calls = 0
        self.started = threading.Event()
        self.release = threading.Event()
        self.hold_first = hold_first
        self.barrier = barrier
        self._forward = sam.image_encoder.forward
        self._lock = threading.Lock()
        sam.image_encoder.forward = self

    def __call__(self, x):
        with self._lock:
            self.calls += 1
            first = self.calls == 1
        self.started.set()
        if self.hold_first and first:
            assert self.release.wait(timeout=10)
        if self.barrier is not None:
            self.barrier.wait(timeout=10)
        return self._forward(x)


@pytest.fixture
def sam():
    return build_tiny_sam()


@pytest.fixture
def segmenter(sam):
    with Segmenter(sam) as s:
        yield s


def test_a_box_prompt_gives_a_mask_of_the_image_size_and_a_score(segmenter):
    result = segmenter.segment_box("a", _image(1), BOX)
    assert result.mask.shape == (120, 200)
    assert result.mask.dtype == bool
    assert isinstance(result.score, float)
    assert result.low_res_logits.shape == (1, LOW_RES, LOW_RES)
    assert result.prompt_box_xyxy == BOX


def test_a_box_prompt_keeps_the_candidate_with_the_best_predicted_iou(sam, segmenter):
    image = _image(1)
    result = segmenter.segment_box("a", image, BOX)
    predictor = SamPredictor(sam)
    predictor.set_image(image)
    masks, scores, _ = predictor.predict(box=np.array(BOX), multimask_output=True)
    assert len(scores) == 3
    assert result.score == pytest.approx(float(scores.max()))
    assert np.array_equal(result.mask, masks[int(np.argmax(scores))])


def test_a_prompt_on_a_cached_embedding_gives_the_same_mask_as_a_fresh_predictor(sam, segmenter):
    image = _image(2)
    segmenter.segment_box("a", image, BOX)
    cached = segmenter.segment_box("a", image, (10.0, 10.0, 60.0, 50.0))
    predictor = SamPredictor(sam)
    predictor.set_image(image)
    masks, scores, logits = predictor.predict(box=np.array([10.0, 10.0, 60.0, 50.0]), multimask_output=True)
    best = int(np.argmax(scores))
    assert np.array_equal(cached.mask, masks[best])
    assert np.allclose(cached.low_res_logits, logits[best : best + 1], atol=1e-5)


def test_refining_with_points_passes_the_previous_logits_and_changes_the_result(sam, segmenter, monkeypatch):
    image = _image(3)
    first = segmenter.segment_box("a", image, BOX)
    seen = {}
    forward = sam.prompt_encoder.forward

    def spy(points, boxes, masks):
        seen.update(points=points, boxes=boxes, masks=masks)
        return forward(points, boxes, masks)

    monkeypatch.setattr(sam.prompt_encoder, "forward", spy)
    refined = segmenter.refine("a", image, BOX, [[40.0, 50.0], [90.0, 80.0]], [1, 0], previous=first)
    assert torch.equal(seen["masks"], torch.from_numpy(first.low_res_logits)[None])
    assert seen["points"][1].tolist() == [[1, 0]]
    assert seen["boxes"] is not None
    assert not np.allclose(refined.low_res_logits, first.low_res_logits)
    assert refined.mask.shape == (120, 200)


def test_a_cache_hit_does_not_rerun_the_image_encoder(sam, segmenter):
    spy = EncoderSpy(sam)
    image = _image(4)
    first = segmenter.segment_box("a", image, BOX)
    segmenter.segment_box("a", image, (0.0, 0.0, 50.0, 50.0))
    segmenter.refine("a", image, BOX, [[30.0, 40.0]], [1], previous=first)
    assert spy.calls == 1


def test_the_cache_evicts_the_least_recently_used_embedding_at_its_bound(sam):
    spy = EncoderSpy(sam)
    with Segmenter(sam, cache_size=2) as segmenter:
        for image_id in ("a", "b", "a", "c"):
            segmenter.segment_box(image_id, _image(ord(image_id)), BOX)
        assert segmenter.cached_ids() == ["a", "c"]
        assert spy.calls == 3
        segmenter.segment_box("b", _image(ord("b")), BOX)
        assert spy.calls == 4
        assert segmenter.cached_ids() == ["c", "b"]


def test_a_prefetch_fills_the_cache_so_the_prompt_runs_only_the_decoder(sam, segmenter):
    spy = EncoderSpy(sam)
    segmenter.prefetch("a", _image(5)).result(timeout=10)
    assert segmenter.cached_ids() == ["a"]
    segmenter.segment_box("a", _image(5), BOX)
    assert spy.calls == 1


def test_a_prefetch_returns_before_the_embedding_is_computed(sam, segmenter):
    spy = EncoderSpy(sam, hold_first=True)
    future = segmenter.prefetch("a", _image(5))
    assert spy.started.wait(timeout=10)
    assert not future.done()
    spy.release.set()
    future.result(timeout=10)
    assert segmenter.cached_ids() == ["a"]


def test_a_cancelled_queued_prefetch_never_runs_and_leaves_the_cache_unchanged(sam, segmenter):
    spy = EncoderSpy(sam, hold_first=True)
    running = segmenter.prefetch("a", _image(6))
    assert spy.started.wait(timeout=10)
    queued = segmenter.prefetch("b", _image(7))
    assert segmenter.cancel_prefetch("b")
    spy.release.set()
    running.result(timeout=10)
    assert queued.cancelled()
    assert spy.calls == 1
    assert segmenter.cached_ids() == ["a"]


def test_a_prefetch_cancelled_while_running_is_not_cached(sam, segmenter):
    spy = EncoderSpy(sam, hold_first=True)
    running = segmenter.prefetch("a", _image(6))
    assert spy.started.wait(timeout=10)
    assert segmenter.cancel_prefetch("a")
    spy.release.set()
    running.result(timeout=10)
    assert segmenter.cached_ids() == []


def test_prefetching_a_cached_or_pending_image_does_not_compute_it_again(sam, segmenter):
    spy = EncoderSpy(sam, hold_first=True)
    pending = segmenter.prefetch("a", _image(5))
    assert spy.started.wait(timeout=10)
    assert segmenter.prefetch("a", _image(5)) is pending
    spy.release.set()
    pending.result(timeout=10)
    segmenter.prefetch("a", _image(5)).result(timeout=10)
    assert spy.calls == 1


def test_a_computation_started_by_a_prompt_cannot_be_cancelled(sam, segmenter):
    spy = EncoderSpy(sam, hold_first=True)
    prompt = threading.Thread(target=segmenter.segment_box, args=("a", _image(5), BOX))
    prompt.start()
    assert spy.started.wait(timeout=10)
    assert not segmenter.cancel_prefetch("a")
    spy.release.set()
    prompt.join(timeout=10)
    assert segmenter.cached_ids() == ["a"]


def test_an_encoder_failure_reaches_the_prefetch_future_and_nothing_is_cached(sam, segmenter, monkeypatch):
    def broken(x):
        raise RuntimeError("out of memory")

    monkeypatch.setattr(sam.image_encoder, "forward", broken)
    assert isinstance(segmenter.prefetch("a", _image(5)).exception(timeout=10), RuntimeError)
    assert segmenter.cached_ids() == []
    with pytest.raises(RuntimeError, match="out of memory"):
        segmenter.segment_box("a", _image(5), BOX)


def test_a_prompt_on_an_image_being_prefetched_waits_for_that_computation(sam, segmenter):
    spy = EncoderSpy(sam, hold_first=True)
    image = _image(8)
    prefetch = segmenter.prefetch("a", image)
    assert spy.started.wait(timeout=10)
    results = []
    prompt = threading.Thread(target=lambda: results.append(segmenter.segment_box("a", image, BOX)))
    prompt.start()
    spy.release.set()
    prompt.join(timeout=10)
    prefetch.result(timeout=10)
    assert len(results) == 1
    assert spy.calls == 1


def test_a_prompt_on_an_image_whose_prefetch_is_queued_computes_it_at_once(sam, segmenter):
    spy = EncoderSpy(sam, hold_first=True)
    running = segmenter.prefetch("a", _image(9))
    assert spy.started.wait(timeout=10)
    queued = segmenter.prefetch("b", _image(10))
    result = segmenter.segment_box("b", _image(10), BOX)  # returns while the worker is still held on "a"
    assert result.mask.shape == (120, 200)
    assert queued.done() and not running.done()
    spy.release.set()
    running.result(timeout=10)
    assert spy.calls == 2
    assert sorted(segmenter.cached_ids()) == ["a", "b"]


def test_concurrent_prefetch_and_prompt_on_different_images_are_safe(sam):
    image_a, image_b = _image(11), _image(12)
    with Segmenter(build_tiny_sam()) as reference:
        expected_a = reference.segment_box("a", image_a, BOX)
        expected_b = reference.segment_box("b", image_b, BOX)
    spy = EncoderSpy(sam, barrier=threading.Barrier(2))  # both encoders must be running at the same time
    with Segmenter(sam) as segmenter:
        prefetch = segmenter.prefetch("a", image_a)
        result_b = segmenter.segment_box("b", image_b, BOX)
        prefetch.result(timeout=10)
        result_a = segmenter.segment_box("a", image_a, BOX)
        assert spy.calls == 2
        assert sorted(segmenter.cached_ids()) == ["a", "b"]
    assert np.array_equal(result_a.mask, expected_a.mask)
    assert np.array_equal(result_b.mask, expected_b.mask)


def test_closing_drops_queued_prefetches_and_refuses_new_ones(sam):
    spy = EncoderSpy(sam, hold_first=True)
    segmenter = Segmenter(sam)
    running = segmenter.prefetch("a", _image(13))
    assert spy.started.wait(timeout=10)
    queued = segmenter.prefetch("b", _image(14))
    segmenter.close(wait=False)
    spy.release.set()
    running.result(timeout=10)
    assert queued.cancelled()
    with pytest.raises(RuntimeError):
        segmenter.prefetch("c", _image(15))
    assert segmenter.segment_box("b", _image(14), BOX).mask.shape == (120, 200)


def test_an_image_id_reused_for_an_image_of_another_size_is_refused(segmenter):
    segmenter.segment_box("a", _image(16), BOX)
    with pytest.raises(ValueError, match="must always name the same image"):
        segmenter.segment_box("a", _image(16, height=60), BOX)


def test_a_bf16_encoder_runs_under_autocast_and_the_decoder_does_not(sam, monkeypatch):
    seen = {}
    encoder, decoder = sam.image_encoder.forward, sam.mask_decoder.forward

    def encoder_spy(x):
        seen["encoder"] = (torch.is_autocast_enabled("cpu"), torch.get_autocast_dtype("cpu"))
        return encoder(x)

    def decoder_spy(**kwargs):
        seen["decoder"] = torch.is_autocast_enabled("cpu")
        return decoder(**kwargs)

    monkeypatch.setattr(sam.image_encoder, "forward", encoder_spy)
    monkeypatch.setattr(sam.mask_decoder, "forward", decoder_spy)
    with Segmenter(sam, encoder_dtype=torch.bfloat16) as segmenter:
        result = segmenter.segment_box("a", _image(18), BOX)
    assert seen == {"encoder": (True, torch.bfloat16), "decoder": False}
    assert result.mask.shape == (120, 200)


def test_an_image_that_is_not_rgb_uint8_is_refused(segmenter):
    with pytest.raises(ValueError, match="RGB uint8"):
        segmenter.segment_box("a", _image(17).astype(np.float32), BOX)


def test_the_tight_box_has_exclusive_far_edges():
    mask = np.zeros((10, 12), dtype=bool)
    mask[2:5, 3:9] = True  # rows 2..4, columns 3..8
    result = MaskResult.from_mask(mask, 0.9, np.zeros((1, 4, 4)), (3.0, 2.0, 9.0, 5.0))
    assert result.box_xyxy == (3.0, 2.0, 9.0, 5.0)
    assert not result.empty
    assert not result.spills


def test_an_empty_mask_is_flagged_and_has_no_box():
    result = MaskResult.from_mask(np.zeros((10, 12), dtype=bool), 0.1, np.zeros((1, 4, 4)), (1.0, 1.0, 5.0, 5.0))
    assert result.empty
    assert result.box_xyxy is None
    assert not result.spills


def test_a_mask_spills_when_its_area_outside_the_box_exceeds_half_the_box_area():
    box = (2.0, 2.0, 6.0, 6.0)  # 16 pixels; spilling means more than 8 mask pixels outside it
    mask = np.zeros((10, 10), dtype=bool)
    mask[2:6, 2:6] = True
    mask[0:2, 2:6] = True  # 8 pixels above the box: not more than 8
    assert not MaskResult.from_mask(mask, 0.5, np.zeros((1, 4, 4)), box).spills
    mask[6, 2] = True  # a 9th pixel outside
    assert MaskResult.from_mask(mask, 0.5, np.zeros((1, 4, 4)), box).spills


def test_the_spill_rule_counts_only_the_part_of_the_box_inside_the_image():
    box = (-4.0, -4.0, 4.0, 4.0)  # 64 pixels, of which 16 lie in the image
    mask = np.zeros((10, 10), dtype=bool)
    mask[0:3, 4:7] = True  # 9 pixels outside the box: more than 0.5 x 16
    assert MaskResult.from_mask(mask, 0.5, np.zeros((1, 4, 4)), box).spills


def test_a_checkpoint_round_trip_restores_every_weight(sam, tmp_path):
    path = tmp_path / "tiny.pth"
    torch.save(sam.state_dict(), path)
    loaded = load_checkpoint(build_tiny_sam(seed=1), path)
    for name, tensor in sam.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], tensor), name


def test_a_truncated_checkpoint_is_a_clear_error(sam, tmp_path):
    path = tmp_path / "tiny.pth"
    torch.save(sam.state_dict(), path)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(ModelUnavailable, match=f"{path} cannot be read: it is truncated"):
        load_checkpoint(build_tiny_sam(), path)


def test_a_checkpoint_with_wrong_keys_is_a_clear_error(sam, tmp_path):
    state = sam.state_dict()
    state["decoder.extra"] = state.pop("mask_decoder.iou_token.weight")
    path = tmp_path / "tiny.pth"
    torch.save(state, path)
    with pytest.raises(ModelUnavailable, match=r"1 keys missing \(first: mask_decoder.iou_token.weight\); "
                                               r"1 unexpected keys \(first: decoder.extra\)"):
        load_checkpoint(build_tiny_sam(), path)


def test_a_checkpoint_for_another_model_size_names_the_shapes_that_differ(sam, tmp_path):
    state = sam.state_dict()
    state["mask_decoder.iou_token.weight"] = torch.zeros(1, 8)
    path = tmp_path / "tiny.pth"
    torch.save(state, path)
    with pytest.raises(ModelUnavailable, match=r"mask_decoder.iou_token.weight \(1, 8\) instead of \(1, 32\)"):
        load_checkpoint(build_tiny_sam(), path)


def test_a_file_that_is_not_a_checkpoint_is_a_clear_error(tmp_path):
    path = tmp_path / "notes.pth"
    path.write_bytes(b"these are not weights")
    with pytest.raises(ModelUnavailable, match=f"{path} cannot be read"):
        load_checkpoint(build_tiny_sam(), path)


def test_a_checkpoint_that_holds_no_state_dict_is_a_clear_error(tmp_path):
    path = tmp_path / "list.pth"
    torch.save([torch.zeros(2)], path)
    with pytest.raises(ModelUnavailable, match=f"{path} holds a list, not a state dict of tensors"):
        load_checkpoint(build_tiny_sam(), path)


def test_a_pickle_that_would_run_code_is_refused_and_its_code_never_runs(tmp_path):
    marker = tmp_path / "pwned.txt"

    class WritesAFile:
        def __reduce__(self):
            return (exec, (f"open({str(marker)!r}, 'w').write('ran')",))

    path = tmp_path / "evil.pth"
    torch.save({"image_encoder.pos_embed": WritesAFile()}, path)
    with pytest.raises(ModelUnavailable, match=f"{path} was refused: it is a pickle that calls exec"):
        load_checkpoint(build_tiny_sam(), path)
    assert not marker.exists()
    torch.load(path, weights_only=False)  # the payload is real: an unguarded load runs it
    assert marker.read_text() == "ran"


def test_loading_a_wrong_file_into_the_registry_model_names_the_file(sam, tmp_path):
    path = tmp_path / "sam_vit_b.pth"
    torch.save(sam.state_dict(), path)
    with pytest.raises(ModelUnavailable, match=f"{path} does not fit this SAM model: .* keys missing"):
        Segmenter.load("vit_b", checkpoint=path, device="cpu")


def test_loading_without_a_downloaded_checkpoint_says_where_to_get_it(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    with pytest.raises(ModelUnavailable, match="no SAM vit_b checkpoint at .*download_checkpoint"):
        Segmenter.load("vit_b", device="cpu")


def test_an_unknown_model_type_is_a_clear_error():
    with pytest.raises(ModelUnavailable, match="unknown SAM model type 'vit_x'"):
        Segmenter.load("vit_x", device="cpu")


def test_bfloat16_is_refused_on_the_cpu(tmp_path):
    with pytest.raises(ValueError, match="bfloat16 runs only on CUDA"):
        Segmenter.load("vit_b", checkpoint=tmp_path / "x.pth", device="cpu", precision="bfloat16")


def test_checkpoints_live_in_the_user_cache_folder(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert checkpoint_path("vit_h") == Path(tmp_path) / "annotator" / "sam" / "sam_vit_h_4b8939.pth"


def test_download_checkpoint_fetches_the_listed_file_into_the_cache(monkeypatch, tmp_path):
    server = FileServer()
    try:
        monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
        monkeypatch.setitem(SAM_CHECKPOINTS, "vit_b", CheckpointSpec(server.url, len(PAYLOAD), PAYLOAD_SHA256))
        path = download_checkpoint("vit_b")
    finally:
        server.close()
    assert path == Path(tmp_path) / "annotator" / "sam" / "model.pth"
    assert path.read_bytes() == PAYLOAD
