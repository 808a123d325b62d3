"""annotator: referring expressions to boxes and masks from a frozen LVLM's localization heads and SAM."""

__version__ = "0.1.0"
