"""Where the project's data folders are (the repository's `resources/` and `exports/`)."""

from __future__ import annotations

import os
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
RESOURCES = Path(os.environ.get("ANNOTATOR_RESOURCES", PROJECT_ROOT / "resources"))
HEADS_DIR = RESOURCES / "heads"
MODELS_DIR = RESOURCES / "models"
DEMO_DIR = RESOURCES / "demo"
EXPORTS_DIR = PROJECT_ROOT / "exports"
