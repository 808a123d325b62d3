"""The default category for a new annotation: the expression's head noun, matched to the known categories.

English referring expressions put the head noun at the end of the first noun phrase, before any prepositional
phrase or relative clause: "the man in the red jacket on the left" -> "man", "all the red cars" -> "car",
"the disc that is red" -> "disc". Words that name no kind of thing ("one", "thing", "object") give no guess, so
the last used category stays the default.
"""

from __future__ import annotations

import re

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


def head_noun(expression: str) -> str | None:
    """The head noun of a referring expression, singular and lower case; None when there is none worth naming."""
    words = _WORD.findall(expression.lower())
    phrase: list[str] = []
    for word in words:
        if word in _CLAUSE_STARTS and phrase:
            break
        if word not in _CLAUSE_STARTS and word not in _DETERMINERS:
            phrase.append(word)
    if not phrase:
        return None
    noun = singular(phrase[-1])
    return None if noun in _GENERIC else noun


def singular(word: str) -> str:
    """A plural English noun's singular for the regular endings ("cars", "boxes", "berries", "glasses")."""
    if len(word) > 4 and word.endswith("ies"):
        return word[:-3] + "y"
    if len(word) > 4 and word.endswith(("sses", "shes", "ches", "xes", "zes")):
        return word[:-2]
    if len(word) > 3 and word.endswith("s") and not word.endswith(("ss", "us", "is")):
        return word[:-1]
    return word


def default_category(expression: str, known: list[str], last_used: str) -> str:
    """The category to preselect: a known category named by the head noun, else the head noun, else the last used.

    Matching ignores case and plural ("Cars" matches the category "car").
    """
    noun = head_noun(expression)
    if noun is None:
        return last_used
    for name in known:
        if singular(name.lower()) == noun:
            return name
    return noun
