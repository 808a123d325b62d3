"""One exception type per domain; each message says what failed and where, in the user's words."""


class AnnotatorError(Exception):
    """Base of the errors the UI shows in a dialog and the CLI prints as one line on stderr."""


class ModelUnavailable(AnnotatorError):
    """A model (LVLM or SAM) cannot be loaded: missing, offline, corrupt or of the wrong kind."""


class ImageLoadError(AnnotatorError):
    """An image file cannot be read: not an image, truncated, corrupt or over the pixel limit."""


class CocoFormatError(AnnotatorError):
    """A COCO / RefCOCO-style file is malformed."""


class ProjectStoreError(AnnotatorError):
    """The project store cannot be opened or written (locked, corrupt, newer schema)."""


class ExportError(AnnotatorError):
    """An export cannot be written (full disk, unwritable or wrong destination); nothing in the store is lost."""


class ExportCancelled(AnnotatorError):
    """An export was cancelled before it replaced anything: the destination is as it was."""
