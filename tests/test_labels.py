"""Labels without Qt: the head noun, labelme's labels.txt, the label set's guesses, the synonym table and the
colour of a label."""

from __future__ import annotations

import json
import zlib

import pytest

from annotator.errors import AnnotatorError
from annotator.labels import (
    CATEGORY_COLOURS,
    LabelSet,
    LabelsFileError,
    category_key,
    colour_index,
    default_category,
    head_noun,
    load_synonyms,
    project_synonyms_path,
    read_labels_file,
    read_synonyms_file,
    singular,
)
from annotator.labels.synonyms import SHIPPED_SYNONYMS

COCO = (
    "person, bicycle, car, motorcycle, airplane, bus, train, truck, boat, traffic light, fire hydrant, stop sign, "
    "parking meter, bench, bird, cat, dog, horse, sheep, cow, elephant, bear, zebra, giraffe, backpack, umbrella, "
    "handbag, tie, suitcase, frisbee, skis, snowboard, sports ball, kite, baseball bat, baseball glove, skateboard, "
    "surfboard, tennis racket, bottle, wine glass, cup, fork, knife, spoon, bowl, banana, apple, sandwich, orange, "
    "broccoli, carrot, hot dog, pizza, donut, cake, chair, couch, potted plant, bed, dining table, toilet, tv, "
    "laptop, mouse, remote, keyboard, cell phone, microwave, oven, toaster, sink, refrigerator, book, clock, vase, "
    "scissors, teddy bear, hair drier, toothbrush"
).split(", ")


def test_the_coco_name_list_of_these_tests_has_the_80_categories():
    assert len(COCO) == len(set(COCO)) == 80
    assert {"traffic light", "hair drier", "toothbrush", "person", "microwave", "oven"} <= set(COCO)


# ----- head noun (the guess without a label set) ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("expression", "noun"),
    [
        ("the man in the red jacket on the left", "man"),
        ("all the red cars", "car"),
        ("the disc that is red in the image", "disc"),
        ("boxes", "box"),
        ("red one on the left", None),
        ("the", None),
        ("the two women by the door", "woman"),
        ("the buses", "bus"),
    ],
)
def test_the_head_noun_is_the_last_word_before_any_prepositional_phrase(expression, noun):
    assert head_noun(expression) == noun


@pytest.mark.parametrize(
    ("plural", "one"),
    [("cars", "car"), ("boxes", "box"), ("berries", "berry"), ("glasses", "glass"), ("bus", "bus"),
     ("people", "person"), ("children", "child"), ("knives", "knife"), ("mice", "mouse")],
)
def test_singular_knows_the_regular_endings_and_common_irregular_plurals(plural, one):
    assert singular(plural) == one


def test_the_default_category_prefers_a_known_category_then_the_noun_then_the_last_used():
    assert default_category("two red Cars", ["Car", "person"], "person") == "Car"
    assert default_category("the dog", ["Car"], "person") == "dog"
    assert default_category("the left one", ["Car"], "person") == "person"


def test_with_a_label_set_the_default_category_is_always_a_label():
    labels = LabelSet(("person", "car"), {"man": "person"})
    assert default_category("the man on the left", ["dog"], "car", labels) == "person"
    assert default_category("the dog", ["dog"], "car", labels) == "car"


def test_a_category_key_ignores_case_plural_underscores_and_spacing():
    assert category_key("Traffic_Lights") == category_key(" traffic   light ") == "traffic light"
    assert category_key("") == ""


# ----- labels.txt ------------------------------------------------------------------------------------------------


def write(tmp_path, data: bytes, name: str = "labels.txt"):
    path = tmp_path / name
    path.write_bytes(data)
    return path


def test_a_labelme_labels_file_skips_ignore_background_blanks_and_repeats_in_order(tmp_path):
    path = write(tmp_path, b"__ignore__\n_background_\n  person \n\ncar\r\n\nperson\n  \nbicycle\n")
    assert read_labels_file(path) == ["person", "car", "bicycle"]


def test_a_labels_file_with_a_byte_order_mark_reads_the_same(tmp_path):
    path = write(tmp_path, "\ufeffperson\nvoiture\nvélo\n".encode("utf-8"))
    assert read_labels_file(path) == ["person", "voiture", "vélo"]


def test_a_labels_file_keeps_spaces_inside_a_label(tmp_path):
    assert read_labels_file(write(tmp_path, b"traffic light\nfire hydrant")) == ["traffic light", "fire hydrant"]


def one_line_error(exc_info) -> str:
    message = str(exc_info.value)
    assert "\n" not in message
    assert isinstance(exc_info.value, AnnotatorError)
    return message


def test_a_missing_labels_file_is_one_line_naming_it(tmp_path):
    with pytest.raises(LabelsFileError) as exc_info:
        read_labels_file(tmp_path / "nope.txt")
    assert "nope.txt" in one_line_error(exc_info) and "no such" in str(exc_info.value)


def test_a_folder_given_as_labels_file_is_one_line(tmp_path):
    with pytest.raises(LabelsFileError) as exc_info:
        read_labels_file(tmp_path)
    assert str(tmp_path) in one_line_error(exc_info)


def test_a_labels_file_not_in_utf8_names_the_file_and_line(tmp_path):
    path = write(tmp_path, "person\ncar\nv\xe9lo\n".encode("latin-1"))
    with pytest.raises(LabelsFileError) as exc_info:
        read_labels_file(path)
    message = one_line_error(exc_info)
    assert "labels.txt, line 3" in message and "UTF-8" in message


@pytest.mark.parametrize("data", [b"", b"\n\n  \n", b"__ignore__\n_background_\n"])
def test_a_labels_file_without_labels_is_an_error(tmp_path, data):
    with pytest.raises(LabelsFileError) as exc_info:
        read_labels_file(write(tmp_path, data))
    assert "no labels" in one_line_error(exc_info)


# ----- label set ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def coco() -> LabelSet:
    return LabelSet(tuple(COCO), load_synonyms())


def test_match_ignores_case_and_plural_and_returns_the_label_as_spelled():
    labels = LabelSet(("person", "Traffic_Light", "bus"))
    assert labels.match("Persons") == labels.match("person") == "person"
    assert labels.match("traffic lights") == "Traffic_Light"
    assert labels.match("buses") == "bus"
    assert labels.match("man") is None
    assert "PERSONS" in labels and "cat" not in labels and 3 not in labels
    assert labels.index("Buses") == 2 and labels.index("cat") is None


def test_an_empty_label_set_is_refused():
    with pytest.raises(ValueError):
        LabelSet(())
    with pytest.raises(ValueError):
        LabelSet(("person", " "))


@pytest.mark.parametrize(
    ("expression", "label"),
    [
        ("the man in red", "person"),
        ("the small kitten", "cat"),
        ("two little girls on the bench", "person"),
        ("the people at the back", "person"),
        ("a yellow taxi", "car"),
        ("the dirt bike", "motorcycle"),
        ("the bike next to the car", "bicycle"),
        ("hot dogs", "hot dog"),
        ("the brown dog", "dog"),
        ("the stuffed animal", "teddy bear"),
        ("the microwave oven above the stove", "microwave"),
        ("the oven", "oven"),
        ("the red fire hydrant", "fire hydrant"),
        ("the smartphone in her hand", "cell phone"),
        ("Persons", "person"),
    ],
)
def test_the_guess_maps_the_head_noun_onto_the_coco_set(coco, expression, label):
    assert coco.guess(expression, last_used="car") == label


def test_the_label_itself_wins_over_a_synonym():
    labels = LabelSet(("person", "man"), {"man": "person"})
    assert labels.guess("the man in red", "person") == "man"
    assert LabelSet(("person",), {"man": "person"}).guess("the man in red", "") == "person"


def test_a_synonym_of_a_label_outside_the_set_does_not_count():
    labels = LabelSet(("dog", "car"), {"kitten": "cat"})
    assert labels.guess("the small kitten", "car") == "car"


def test_without_a_match_the_guess_is_the_last_used_label_else_the_first():
    labels = LabelSet(("person", "car"), {})
    assert labels.guess("the red one", "car") == "car"
    assert labels.guess("the red one", "Cars") == "car"
    assert labels.guess("the red one", "dog") == "person"
    assert labels.guess("", "") == "person"


def test_for_project_cleans_the_names_and_loads_the_shipped_synonyms(tmp_path):
    labels = LabelSet.for_project([" person ", "", "car", "person"], tmp_path)
    assert labels.names == ("person", "car")
    assert labels.guess("the woman", "car") == "person"


# ----- synonym table -------------------------------------------------------------------------------------------


def test_the_shipped_table_covers_the_80_coco_categories():
    table = read_synonyms_file(SHIPPED_SYNONYMS)
    assert set(table) == set(COCO)
    assert {"man", "woman", "boy", "girl", "child", "kid", "guy", "lady", "people", "player"} <= set(table["person"])
    assert {"sedan", "taxi"} <= set(table["car"])


def test_no_shipped_word_is_listed_twice_or_names_another_coco_label():
    keys = {category_key(name): name for name in COCO}
    seen: dict[str, str] = {}
    for label, words in read_synonyms_file(SHIPPED_SYNONYMS).items():
        for word in words:
            key = category_key(word)
            assert key not in seen, f"{word!r} under {label!r} and {seen[key]!r}"
            assert keys.get(key, label) == label, f"{word!r} under {label!r} is the label {keys[key]!r}"
            seen[key] = label


def test_a_project_table_merges_over_the_shipped_one(tmp_path):
    own = project_synonyms_path(tmp_path)
    assert own == tmp_path / ".annotator" / "synonyms.json"
    own.parent.mkdir()
    own.write_text(json.dumps({"person": ["hiker"], "worker": ["man", "builder"]}), encoding="utf-8")
    merged = load_synonyms(own)
    assert merged["hiker"] == "person"
    assert merged["man"] == "worker" and merged["builder"] == "worker"
    assert "woman" not in merged  # the project's "person" entry replaces the shipped one
    assert merged["kitten"] == "cat"
    shipped = load_synonyms()
    assert shipped["man"] == shipped["woman"] == "person"
    assert load_synonyms(tmp_path / "missing.json") == shipped


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ('{"person": ["man",]}', "line 1: not valid JSON"),
        ('["man"]', "expected a JSON object"),
        ('{"person": "man"}', "must be a list of strings"),
        ('{"person": [1]}', "must be a list of strings"),
    ],
)
def test_a_malformed_project_table_is_one_line_naming_it(tmp_path, text, says):
    path = tmp_path / "synonyms.json"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(LabelsFileError) as exc_info:
        load_synonyms(path)
    message = one_line_error(exc_info)
    assert "synonyms.json" in message and says in message


# ----- colours ---------------------------------------------------------------------------------------------------


def test_with_a_label_set_the_first_twelve_labels_get_twelve_distinct_colours_by_index():
    labels = COCO[:14]
    assert [colour_index(name, labels) for name in labels] == [*range(12), 0, 1]
    assert len({colour_index(name, labels) for name in labels[:12]}) == 12
    assert colour_index("Persons", labels) == 0
    assert colour_index("car", ["bus", "car"]) == 1


def test_without_a_label_set_or_outside_it_the_colour_is_the_name_hash():
    expected = zlib.crc32(b"car") % len(CATEGORY_COLOURS)
    assert colour_index("car") == expected
    assert colour_index("car", None) == colour_index("car", []) == colour_index("car", ["dog"]) == expected
