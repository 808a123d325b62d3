"""The LVLM engine: last-token attention of chosen heads captured through transformers' attention interface,
early exit after the deepest localization head, and the per-image prefix cache (`engine.LvlmEngine`); checkpoint
reading (`checkpoint`), the prompt and image inputs (`model_input`)."""

from annotator.lvlm.engine import LvlmEngine

__all__ = ["LvlmEngine"]
