"""Mask editing without Qt: the mask's outline as editable rings, and a round brush that paints the mask in place."""
