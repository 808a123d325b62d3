"""The main window's actions and menus, built from the shortcut table; settings' key overrides applied to them."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from PySide6.QtCore import Qt
from PySide6.QtGui import QAction, QKeySequence
from PySide6.QtWidgets import QMenu

from annotator.ui.key_routing import AppShortcutsFirst, modifier_keys
from annotator.ui.shortcuts import SHORTCUTS, effective_keys

if TYPE_CHECKING:
    from annotator.ui.main_window import MainWindow

CHECKABLE = frozenset({"all_instances", "toggle_heatmap"})


def handlers(window: MainWindow) -> dict[str, Callable[[], None]]:
    """What each action of the shortcut table does."""
    return {
        "open_folder": window.choose_folder,
        "save": window.save,
        "export": window.choose_export,
        "settings": window.open_settings,
        "quit": window.close,
        "undo": window.undo,
        "redo": window.redo,
        "next_image": lambda: window.go_to_neighbour(+1),
        "previous_image": lambda: window.go_to_neighbour(-1),
        "focus_expression": window.focus_expression,
        "accept": window.accept,
        "reject": window.reject,
        "draw_box": window.start_box_drawing,
        "rerun_box": window.session.rerun_box,
        "remove_point": window.session.remove_last_point,
        "delete": window.delete_active,
        "change_category": window.focus_category,
        "edit_polygon": lambda: window.start_mask_edit("polygon"),
        "brush": lambda: window.start_mask_edit("brush"),
        "eraser": lambda: window.start_mask_edit("eraser"),
        "brush_bigger": lambda: window.change_brush_size(+1),
        "brush_smaller": lambda: window.change_brush_size(-1),
        "all_instances": window._all_instances_action_toggled,
        "toggle_heatmap": window._heatmap_action_toggled,
        "fit": window.canvas.fit,
        "zoom_in": window.canvas.zoom_in,
        "zoom_out": window.canvas.zoom_out,
        "mark_done": window.toggle_done,
        "show_shortcuts": window.show_shortcuts,
    }


def build_actions(window: MainWindow) -> None:
    """One QAction per shortcut row (window-wide keys as shortcuts, canvas keys routed by the canvas), the
    menus, and the filter that lets window shortcuts with modifiers work while a text field has focus."""
    todo = handlers(window)
    for shortcut in SHORTCUTS:
        action = QAction(shortcut.text, window)
        action.setObjectName(shortcut.action)
        action.setToolTip(shortcut.description)
        action.setCheckable(shortcut.action in CHECKABLE)
        action.triggered.connect(todo[shortcut.action])
        window.addAction(action)
        window.actions_by_name[shortcut.action] = action
    window._text_key_filter = AppShortcutsFirst(set(), window)
    apply_shortcut_overrides(window)
    for field in (window.panel.expression, window.panel.category.lineEdit(), window.image_list.filter_box):
        field.installEventFilter(window._text_key_filter)
    _build_menus(window)
    window.actions_by_name["undo"].setEnabled(False)
    window.actions_by_name["redo"].setEnabled(False)


def apply_shortcut_overrides(window: MainWindow) -> None:
    """Bind every action to its keys: the table's, or the settings' override."""
    overrides = window.settings.shortcut_overrides()
    canvas_keys: dict[str, Callable[[], None]] = {}
    for shortcut in SHORTCUTS:
        action = window.actions_by_name[shortcut.action]
        keys = effective_keys(shortcut.action, overrides)
        if shortcut.scope == "window":
            action.setShortcuts([QKeySequence(k) for k in keys])
            action.setShortcutContext(Qt.ShortcutContext.WindowShortcut)
        else:
            action.setText(f"{shortcut.text}\t{' / '.join(keys)}")
            for key in keys:
                canvas_keys[key] = action.trigger
    window.canvas.set_key_actions(canvas_keys)
    window_keys = [k for s in SHORTCUTS if s.scope == "window" for k in effective_keys(s.action, overrides)]
    window._text_key_filter.keys = modifier_keys(window_keys)


def _build_menus(window: MainWindow) -> None:
    a = window.actions_by_name
    menu_bar = window.menuBar()
    file_menu = menu_bar.addMenu("&File")
    file_menu.addAction(a["open_folder"])
    window.recent_menu = QMenu("Open &Recent", window)
    file_menu.addMenu(window.recent_menu)
    file_menu.addSeparator()
    for name in ("save", "export"):
        file_menu.addAction(a[name])
    file_menu.addAction("&Import COCO / labelme…", window.choose_import)
    file_menu.addSeparator()
    file_menu.addAction(a["settings"])
    file_menu.addSeparator()
    file_menu.addAction(a["quit"])
    edit_menu = menu_bar.addMenu("&Edit")
    for name in ("undo", "redo", None, "accept", "reject", "delete", "change_category", None, "draw_box",
                 "rerun_box", "remove_point", None, "edit_polygon", "brush", "eraser", "brush_bigger",
                 "brush_smaller", None, "mark_done"):  # fmt: skip
        edit_menu.addSeparator() if name is None else edit_menu.addAction(a[name])
    view_menu = menu_bar.addMenu("&View")
    for name in ("fit", "zoom_in", "zoom_out", None, "toggle_heatmap", "all_instances"):
        view_menu.addSeparator() if name is None else view_menu.addAction(a[name])
    view_menu.addSeparator()
    for dock in window.docks.values():
        view_menu.addAction(dock.toggleViewAction())
    go_menu = menu_bar.addMenu("&Go")
    for name in ("next_image", "previous_image", "focus_expression"):
        go_menu.addAction(a[name])
    help_menu = menu_bar.addMenu("&Help")
    help_menu.addAction(a["show_shortcuts"])
    window._rebuild_recent_menu()
