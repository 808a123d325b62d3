"""`annotator find-heads --synthetic` on the planted model recovers the planted heads and writes a usable file."""

import numpy as np
import pytest
from PIL import Image

from annotator.cli import main
from annotator.grounding.heads import HeadsFile
from annotator.synthetic.planted import PLANTED_HEADS, PLANTED_MODEL_DIR

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SAMPLES = 120



@pytest.fixture(scope="module")
def discovery(tmp_path_factory):
    """One discovery run over 120 synthetic scenes: (exit code, heads file path)."""
    out = tmp_path_factory.mktemp("find-heads") / "planted-heads.json"
    code = main(
        [
            "find-heads",
            "--model",
            str(PLANTED_MODEL_DIR),
            "--synthetic",
            str(SAMPLES),
            "--out",
            str(out),
            "--device",
            "cpu",
        ]
    )
    return code, out


def test_find_heads_on_the_planted_model_finds_exactly_the_planted_heads(discovery):
    code, out = discovery
    assert code == 0
    assert set(HeadsFile.load(out).heads) == set(PLANTED_HEADS.localization)


def test_the_heads_file_records_tau_votes_frequencies_and_mean_sums(discovery):
    import json

    _, out = discovery
    heads_file = HeadsFile.load(out)
    data = json.loads(out.read_text(encoding="utf-8"))
    sums = np.asarray(data["mean_sums"])
    assert heads_file.model == str(PLANTED_MODEL_DIR) and heads_file.num_samples == SAMPLES
    assert heads_file.created and 0 < heads_file.tau < 1
    assert all(heads_file.votes[head] == SAMPLES for head in PLANTED_HEADS.localization)
    assert sums.shape == (heads_file.num_layers, heads_file.num_heads)
    assert {(l, h): f for l, h, f in data["vote_frequencies"]}[PLANTED_HEADS.localization[0]] == 1.0


@pytest.mark.parametrize("suffix", ["-sums.png", "-frequency.png"])
def test_both_plots_are_valid_pngs(discovery, suffix):
    _, out = discovery
    path = out.with_name(out.stem + suffix)
    with Image.open(path) as image:
        assert image.format == "PNG"
        assert image.size[0] > 400 and image.size[1] > 300
        image.verify()


def test_the_heads_file_loads_in_the_app(discovery):
    from annotator.ui.model_loading import resolve_heads
    from annotator.ui.settings import ModelSettings

    _, out = discovery
    settings = ModelSettings(model=str(PLANTED_MODEL_DIR), heads_file=str(out))
    assert set(resolve_heads(settings).heads) == set(PLANTED_HEADS.localization)
