"""Mask models behind one `Segmenter` contract (`segment`: segment-anything SAM with an embedding cache)."""
