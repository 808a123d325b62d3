"""The LVLM engine: last-token attention of chosen heads captured through transformers' attention interface,
early exit after the deepest localization head, and the per-image prefix cache (`engine.LvlmEngine`), for every
family in `families` through its adapter (`family.Family`: `llava`, `qwen2_vl`); the token layout of an image
(`layout`), the prompt (`prompt`), checkpoint reading (`checkpoint`)."""

from annotator.lvlm.engine import LvlmEngine

__all__ = ["LvlmEngine"]
