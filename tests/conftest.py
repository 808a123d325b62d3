"""Shared test set-up: Qt runs offscreen, the Hugging Face hub is never asked, tokenizers stay single-threaded."""

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
