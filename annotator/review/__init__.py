"""The annotation review session without Qt: the current image, pending proposals, decisions, edits and undo."""
