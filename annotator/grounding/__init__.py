"""The grounding method (Kang et al., CVPR 2025): localization heads of a frozen LVLM, boxes, SAM masks.

No Qt here: numpy/torch in, dataclasses out.
"""
