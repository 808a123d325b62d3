"""The head noun of a referring expression, and the default category it suggests.

English referring expressions put the head noun at the end of the first noun phrase, before any prepositional
phrase or relative clause: "the man in the red jacket on the left" -> "man", "all the red cars" -> "car",
"the disc that is red" -> "disc". Words that name no kind of thing ("one", "thing", "object") give no guess, so
the last used category stays the default.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from annotator.labels.label_set import LabelSet

_CLAUSE_STARTS = frozenset(
    """
    in on at of with without near by behind beside besides between under over above below from to into onto
    next left right top bottom front back middle center centre that which who whose where while wearing holding
    sitting standing looking facing and or but closest nearest farthest furthest than
    """.split()
)
_DETERMINERS = frozenset("the a an this these those some any all every each both my your his her its our their".split())
_GENERIC = frozenset("one ones thing things object objects item items it this that something stuff guy part".split())
_WORD = re.compile(r"[a-z][a-z'-]*")
_IRREGULAR_PLURALS = {
    "men": "man",
    "women": "woman",
    "gentlemen": "gentleman",
    "policemen": "policeman",
    "firemen": "fireman",
    "fishermen": "fisherman",
    "businessmen": "businessman",
    "children": "child",
    "people": "person",
    "mice": "mouse",
    "geese": "goose",
    "feet": "foot",
    "teeth": "tooth",
    "oxen": "ox",
    "knives": "knife",
    "wives": "wife",
    "leaves": "leaf",
    "shelves": "shelf",
    "wolves": "wolf",
    "calves": "calf",
    "halves": "half",
    "loaves": "loaf",
    "buses": "bus",
}


def noun_phrase(expression: str) -> list[str]:
    """The words of the expression's first noun phrase, lower case, determiners left out ("the big red car" ->
    ["big", "red", "car"]); empty when there is none."""
    phrase: list[str] = []
    for word in _WORD.findall(expression.lower()):
        if word in _CLAUSE_STARTS and phrase:
            break
        if word not in _CLAUSE_STARTS and word not in _DETERMINERS:
            phrase.append(word)
    return phrase


def head_noun(expression: str) -> str | None:
    """The head noun of a referring expression, singular and lower case; None when there is none worth naming."""
    phrase = noun_phrase(expression)
    if not phrase:
        return None
    noun = singular(phrase[-1])
    return None if noun in _GENERIC else noun


def singular(word: str) -> str:
    """A plural English noun's singular for the regular endings ("cars", "boxes", "berries", "glasses") and the
    common irregular plurals ("men", "children", "people", "knives", "buses")."""
    if word in _IRREGULAR_PLURALS:
        return _IRREGULAR_PLURALS[word]
    if len(word) > 4 and word.endswith("ies"):
        return word[:-3] + "y"
    if len(word) > 4 and word.endswith(("sses", "shes", "ches", "xes", "zes")):
        return word[:-2]
    if len(word) > 3 and word.endswith("s") and not word.endswith(("ss", "us", "is")):
        return word[:-1]
    return word


def category_key(name: str) -> str:
    """The form two category names are compared in: lower case, underscores as spaces, spaces collapsed, the last
    word singular ("Traffic_Lights" -> "traffic light")."""
    words = name.lower().replace("_", " ").split()
    if not words:
        return ""
    return " ".join([*words[:-1], singular(words[-1])])


def default_category(expression: str, known: list[str], last_used: str, label_set: LabelSet | None = None) -> str:
    """The category to preselect for a new annotation.

    With a label set: `label_set.guess(expression, last_used)`, always one of its labels. Without: a known
    category named by the head noun, else the head noun, else the last used. Matching ignores case and plural
    ("Cars" matches the category "car").
    """
    if label_set is not None:
        return label_set.guess(expression, last_used)
    noun = head_noun(expression)
    if noun is None:
        return last_used
    for name in known:
        if singular(name.lower()) == noun:
            return name
    return noun
