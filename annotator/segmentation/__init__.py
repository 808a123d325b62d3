"""Mask models behind one `Segmenter` contract (`segment`): SAM (`sam_v1`), SAM 2.1 (`sam2`), SAM-HQ (`sam_hq`)."""
