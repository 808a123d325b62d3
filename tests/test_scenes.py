"""Synthetic scenes (synthetic/scenes.py): deterministic per seed, ground truth that agrees with the pixels."""

import json
import cv2
import numpy as np
import pytest

from annotator.grounding.frame import ImageFrame
from annotator.synthetic.scenes import (
    PALETTE,
    SHAPE_WORDS,
    SceneConfig,
    box_iou,
    generate_scene,
    generate_scenes,
)
from annotator.paths import DEMO_DIR
from annotator.synthetic.demo_scenes import DEMO_SCENES, demo_scene

LLAVA_GRID, LLAVA_INPUT = 24, 336


@pytest.fixture(scope="module")
def scenes():
    return list(generate_scenes(seed=3, count=40))


def test_the_same_seed_gives_the_same_scenes(scenes):
    again = list(generate_scenes(seed=3, count=40))
    for a, b in zip(scenes, again):
        assert np.array_equal(a.image, b.image)
        assert a.expression == b.expression and a.target_index == b.target_index
        assert [o.box_xyxy for o in a.objects] == [o.box_xyxy for o in b.objects]


def test_another_seed_gives_other_scenes(scenes):
    other = list(generate_scenes(seed=4, count=5))
    assert all(a.image.shape != b.image.shape or not np.array_equal(a.image, b.image) for a, b in zip(scenes, other))


def test_scene_i_depends_only_on_the_seed_and_i(scenes):
    alone = generate_scene(np.random.default_rng([3, 17]))
    assert np.array_equal(alone.image, scenes[17].image)
    assert alone.expression == scenes[17].expression


def test_each_box_is_the_tight_bound_of_its_mask(scenes):
    for scene in scenes:
        for obj in scene.objects:
            rows = np.flatnonzero(obj.mask.any(axis=1))
            cols = np.flatnonzero(obj.mask.any(axis=0))
            assert obj.box_xyxy == (cols[0], rows[0], cols[-1] + 1, rows[-1] + 1)
            assert obj.mask.shape == (scene.height, scene.width)


def test_objects_neither_overlap_nor_share_a_colour(scenes):
    for scene in scenes:
        stacked = np.sum([o.mask for o in scene.objects], axis=0)
        assert stacked.max() == 1
        colours = [o.colour for o in scene.objects]
        assert len(set(colours)) == len(colours)


def test_mask_pixels_have_the_objects_colour(scenes):
    for scene in scenes:
        for obj in scene.objects:
            mean = scene.image[obj.mask].mean(axis=0)
            assert np.abs(mean - np.asarray(obj.rgb)).max() < 2.0
            assert np.abs(np.asarray(obj.rgb) - np.asarray(PALETTE[obj.colour])).max() <= 8


def test_the_expression_names_the_target_colour_and_no_other(scenes):
    for scene in scenes:
        words = scene.expression.split()
        assert scene.target.colour in words
        assert not set(words) & (set(PALETTE) - {scene.target.colour})
        shape_words = {w for synonyms in SHAPE_WORDS.values() for w in synonyms}
        assert set(words) & shape_words <= set(SHAPE_WORDS[scene.target.shape])


def test_spatial_words_are_true_of_the_target():
    checked = 0
    for scene in generate_scenes(seed=5, count=80):
        words = set(scene.expression.split())
        cx = [(o.box_xyxy[0] + o.box_xyxy[2]) / 2 for o in scene.objects]
        cy = [(o.box_xyxy[1] + o.box_xyxy[3]) / 2 for o in scene.objects]
        others = [i for i in range(len(scene.objects)) if i != scene.target_index]
        t = scene.target_index
        for word, holds in (
            ("left", lambda: all(cx[t] < cx[i] for i in others)),
            ("right", lambda: all(cx[t] > cx[i] for i in others)),
            ("top", lambda: all(cy[t] < cy[i] for i in others)),
            ("bottom", lambda: all(cy[t] > cy[i] for i in others)),
        ):
            if word in words:
                assert others and holds(), scene.expression
                checked += 1
    assert checked > 5


def test_image_size_and_aspect_stay_in_the_configured_ranges():
    config = SceneConfig(long_side=(300, 400), aspect=(0.5, 2.0))
    aspects = []
    for scene in generate_scenes(seed=6, count=40, config=config):
        assert 300 <= max(scene.width, scene.height) <= 400
        assert 0.5 - 0.01 <= scene.aspect <= 2.0 + 0.01
        aspects.append(scene.aspect)
    assert min(aspects) < 0.8 and max(aspects) > 1.25


def test_target_width_is_the_configured_fraction_of_the_long_side_on_square_images():
    config = SceneConfig(long_side=(400, 400), aspect=(1.0, 1.0), target_width=(0.3, 0.35), object_aspect=(1.0, 1.0))
    for scene in generate_scenes(seed=7, count=20, config=config):
        assert 0.3 * 400 - 1 <= scene.target.width_px <= 0.35 * 400 + 1


def test_objects_shrink_to_fit_a_very_wide_image():
    config = SceneConfig(long_side=(480, 480), aspect=(3.0, 3.0), target_width=(0.6, 0.6), object_aspect=(1.0, 1.0))
    scene = generate_scene(np.random.default_rng(0), config)
    assert scene.height == 160
    assert scene.target.height_px <= 160 - 4


def test_width_in_cells_counts_cells_of_the_padded_square():
    config = SceneConfig(long_side=(480, 480), aspect=(2.0, 2.0), num_objects=(1, 1))
    scene = generate_scene(np.random.default_rng(1), config)
    frame = ImageFrame.for_image(scene.width, scene.height, LLAVA_GRID, LLAVA_INPUT)
    # The 480 x 240 image sits in a 480 px square cut into 24 cells: 20 px per cell along both axes.
    assert scene.target.width_cells(frame) == pytest.approx(scene.target.width_px / 20.0)
    assert scene.target.height_cells(frame) == pytest.approx(scene.target.height_px / 20.0)


def test_box_iou_of_two_half_overlapping_squares_is_one_third():
    assert box_iou((0, 0, 2, 2), (1, 0, 3, 2)) == pytest.approx(2 / 6)
    assert box_iou((0, 0, 1, 1), (2, 2, 3, 3)) == 0.0
    assert box_iou((5, 5, 9, 8), (5, 5, 9, 8)) == 1.0


def _demo_lines():
    return [json.loads(line) for line in (DEMO_DIR / "ground_truth.jsonl").read_text(encoding="utf-8").splitlines()]


def test_the_demo_ground_truth_matches_a_fresh_generation():
    lines = _demo_lines()
    assert len(lines) == len(DEMO_SCENES)
    for index, line in enumerate(lines):
        scene = demo_scene(index)
        assert (line["width"], line["height"]) == (scene.width, scene.height)
        assert [tuple(o["box_xyxy"]) for o in line["objects"]] == [o.box_xyxy for o in scene.objects]
        assert line["objects"][scene.target_index]["expression"] == scene.expression


def test_demo_images_are_the_generated_scenes():
    for index, line in enumerate(_demo_lines()):
        scene = demo_scene(index)
        decoded = cv2.cvtColor(cv2.imread(str(DEMO_DIR / line["image"])), cv2.COLOR_BGR2RGB)
        assert decoded.shape == scene.image.shape
        difference = np.abs(decoded.astype(np.int16) - scene.image).mean()
        assert difference == 0 if line["image"].endswith(".png") else difference < 4.0


def test_demo_objects_are_large_enough_for_the_method_on_llavas_grid():
    for index in range(len(DEMO_SCENES)):
        scene = demo_scene(index)
        frame = ImageFrame.for_image(scene.width, scene.height, LLAVA_GRID, LLAVA_INPUT)
        assert all(o.width_cells(frame) >= 9 for o in scene.objects)


def test_the_demo_folder_is_small_and_mixes_png_and_jpeg():
    files = list(DEMO_DIR.iterdir())
    assert sum(f.stat().st_size for f in files) < 600_000
    suffixes = {f.suffix for f in files}
    assert {".png", ".jpg", ".jsonl", ".md"} <= suffixes


def test_the_demo_config_draws_noise_free_png_scenes():
    png = [i for i, (_, _, fmt) in enumerate(DEMO_SCENES) if fmt == "png"]
    scene = demo_scene(png[0])
    background = ~np.any([o.mask for o in scene.objects], axis=0)
    # Without pixel noise neighbouring background pixels differ only by the soft blotches and stripes.
    steps = np.abs(np.diff(scene.image.astype(np.int16), axis=1))[background[:, 1:] & background[:, :-1]]
    assert np.percentile(steps, 99) <= 3
