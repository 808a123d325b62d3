"""Models on a machine: presets (`presets`, resources/models.json), Hugging Face Hub downloads of only the shards
grounding needs (`hub`), and the one loading path of the app, the CLI and Ray (`loading`)."""
