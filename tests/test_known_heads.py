"""The shipped heads tables (resources/heads/) and the HeadsFile format."""

import numpy as np
import pytest

from annotator.grounding.heads import HeadsFile, HeadSelection, find_heads_file, known_heads_files


def test_the_paper_heads_of_llava_7b_ship_as_zero_based_data():
    heads = find_heads_file("llava-hf/llava-1.5-7b-hf")
    assert heads is not None
    assert heads.heads == [(14, 24), (14, 13), (14, 26)]
    assert heads.tau == 0.24
    assert "2503.06287" in heads.source and "0-based" in heads.source


def test_the_paper_heads_of_llava_13b_ship_as_zero_based_data():
    heads = find_heads_file("llava-hf/llava-1.5-13b-hf")
    assert heads is not None and heads.heads == [(15, 39), (16, 30), (7, 2)]


def test_a_model_is_found_by_alias_and_by_a_local_folder_of_that_name():
    assert find_heads_file("liuhaotian/llava-v1.5-7b").model == "llava-hf/llava-1.5-7b-hf"
    assert find_heads_file("/models/llava-1.5-13b-hf/").model == "llava-hf/llava-1.5-13b-hf"


def test_an_unknown_model_has_no_heads_file():
    assert find_heads_file("someone/unknown-model") is None


def test_a_folder_with_its_own_heads_json_is_used(tmp_path):
    HeadsFile(model="local", heads=[(2, 1)], source="test").save(tmp_path / "heads.json")
    assert find_heads_file(str(tmp_path)).heads == [(2, 1)]


def test_every_shipped_heads_file_is_valid():
    files = known_heads_files()
    assert len(files) >= 2
    assert all(f.heads and f.source for f in files)


def test_a_selection_round_trips_through_a_heads_file(tmp_path):
    selection = HeadSelection(
        heads=[(3, 1), (2, 0)],
        tau=0.125,
        votes={(3, 1): 9, (2, 0): 7, (4, 4): 1},
        mean_sums=np.zeros((5, 6)),
        mean_entropy=np.zeros((5, 6)),
        num_samples=10,
    )
    path = tmp_path / "heads.json"
    HeadsFile.from_selection(selection, model="m", source="find-heads").save(path)
    loaded = HeadsFile.load(path)
    assert loaded.heads == [(3, 1), (2, 0)]
    assert loaded.votes == {(3, 1): 9, (2, 0): 7, (4, 4): 1}
    assert (loaded.tau, loaded.num_samples, loaded.num_layers, loaded.num_heads) == (0.125, 10, 5, 6)


def test_a_broken_heads_file_names_itself(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text('{"model": "m", "heads": []}')
    with pytest.raises(ValueError, match="bad.json"):
        HeadsFile.load(path)
