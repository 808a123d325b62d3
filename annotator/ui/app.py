"""The desktop app's entry point: `run_app(folder, argv, labels=...)` (what `annotator [FOLDER] [--labels FILE]`
calls)."""

from __future__ import annotations

import logging
import sys

from PySide6.QtWidgets import QApplication

from annotator.ui.main_window import MainWindow
from annotator.ui.settings import APPLICATION, ORGANIZATION, AppSettings


def create_application(argv: list[str] | None = None) -> QApplication:
    """The process's QApplication (created once), named so QSettings finds the user's settings."""
    app = QApplication.instance()
    if not isinstance(app, QApplication):
        app = QApplication(argv if argv is not None else sys.argv[:1])
    app.setOrganizationName(ORGANIZATION)
    app.setApplicationName(APPLICATION)
    app.setApplicationDisplayName("annotator")
    return app


def run_app(folder: str | None = None, argv: list[str] | None = None, labels: list[str] | None = None) -> int:
    """Show the main window, open `folder` (if given), load the models in the background, run the event loop.

    `argv` goes to Qt (for options such as `-platform`); `labels` (read from `--labels`) becomes the folder's
    label set. Returns the exit code of the event loop.
    """
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    app = create_application(argv)
    window = MainWindow(AppSettings.user())
    app.aboutToQuit.connect(window.shutdown)
    window.show()
    window.start_models()
    if folder and labels is not None:
        window.open_folder(folder, labels=labels)
    elif folder:
        window.open_folder(folder)
    return app.exec()
