"""Finding a model's localization heads (`annotator find-heads`): calibration pairs and attention samples
(`calibration`), the heads file and plots (`report`)."""
