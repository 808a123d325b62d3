"""Categories without Qt: the head noun of an expression, a project's fixed label set (read from labelme's
labels.txt), the synonym table that maps typed words onto it, and the stable colour of each category."""

from annotator.labels.colours import CATEGORY_COLOURS, category_colour_hex, colour_index
from annotator.labels.errors import LabelsFileError
from annotator.labels.head_noun import category_key, default_category, head_noun, noun_phrase, singular
from annotator.labels.label_set import LabelSet, parse_labels, read_labels_file
from annotator.labels.synonyms import load_synonyms, project_synonyms_path, read_synonyms_file

__all__ = [
    "CATEGORY_COLOURS",
    "LabelSet",
    "LabelsFileError",
    "category_colour_hex",
    "category_key",
    "colour_index",
    "default_category",
    "head_noun",
    "load_synonyms",
    "noun_phrase",
    "parse_labels",
    "project_synonyms_path",
    "read_labels_file",
    "read_synonyms_file",
    "singular",
]
