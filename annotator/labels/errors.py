"""The label package's error: a labels file or a synonyms table that cannot be read."""

from annotator.errors import AnnotatorError


class LabelsFileError(AnnotatorError):
    """A labels file (or a synonyms table) cannot be read: missing, not UTF-8, malformed or empty."""
