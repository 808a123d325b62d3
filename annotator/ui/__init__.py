"""The desktop app (PySide6): the only Qt code of the project. Start it with `annotator.ui.app.run_app`."""
