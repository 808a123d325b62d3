"""Every keyboard shortcut of the app, as data (one table; Help > Shortcuts shows it, settings override it).

Keys are Qt's portable key-sequence strings ("Ctrl+Shift+Z"); an action may have several. The common ones follow
what annotators know from labelImg, labelme and X-AnyLabeling: D / A next / previous image, W draw a box,
Delete, Ctrl+Z, Ctrl+S, Ctrl+E, Ctrl+O, F fit, +/- zoom, H heatmap; P / B / X polygon, brush and eraser
editing with [ / ] for the brush size, as in image editors.

`scope` says where a shortcut listens: "window" anywhere in the main window (single letters still type into the
expression box, which claims printable keys), "canvas" only while the image canvas has focus (Enter and Space
accept there, and keep their usual meaning in text fields).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Scope = Literal["window", "canvas"]


@dataclass(frozen=True)
class Shortcut:
    """One action's shortcut: `action` is its stable id, `keys` its default key sequences (portable text)."""

    action: str
    keys: tuple[str, ...]
    text: str
    description: str
    scope: Scope = "window"


SHORTCUTS: tuple[Shortcut, ...] = (
    Shortcut("open_folder", ("Ctrl+O",), "&Open Folder…", "Open a folder of images"),
    Shortcut("save", ("Ctrl+S",), "&Save", "Write everything to disk now (the project also saves on every change)"),
    Shortcut("export", ("Ctrl+E",), "&Export COCO…", "Export the accepted annotations as COCO or RefCOCO JSON"),
    Shortcut("settings", ("Ctrl+,",), "Se&ttings…", "Models, devices, caches, polygon tolerance and shortcuts"),
    Shortcut("quit", ("Ctrl+Q",), "&Quit", "Close the app"),
    Shortcut("undo", ("Ctrl+Z",), "&Undo", "Undo the last change to the annotations"),
    Shortcut("redo", ("Ctrl+Shift+Z", "Ctrl+Y"), "&Redo", "Redo the last undone change"),
    Shortcut("next_image", ("D",), "&Next Image", "Go to the next image in the list (as filtered and sorted)"),
    Shortcut("previous_image", ("A",), "&Previous Image", "Go to the previous image in the list"),
    Shortcut("focus_expression", ("E",), "Type &Expression", "Put the cursor in the expression box"),
    Shortcut(
        "accept", ("Return", "Enter", "Space"), "&Accept Proposal", "Accept the pending proposal", scope="canvas"
    ),
    Shortcut("reject", ("Esc",), "&Reject Proposal", "Reject the pending proposal"),
    Shortcut("draw_box", ("W",), "Draw &Box", "Draw a box by hand for an object the model misses; SAM masks it"),
    Shortcut("rerun_box", ("R",), "Re-run &SAM on Box", "Segment the selected annotation again from its box"),
    Shortcut("remove_point", ("Backspace",), "Remove Last &Point", "Remove the last refinement point"),
    Shortcut("delete", ("Delete",), "&Delete Annotation", "Delete the selected annotation"),
    Shortcut("change_category", ("C",), "Change &Category", "Change the selected annotation's category"),
    Shortcut(
        "edit_polygon",
        ("P",),
        "Edit &Polygon",
        "Drag, add (double-click an edge) or delete (right-click) vertices of the selected annotation's outline",
    ),
    Shortcut("brush", ("B",), "&Brush", "Paint the selected annotation's mask with a round brush"),
    Shortcut("eraser", ("X",), "&Eraser", "Erase from the selected annotation's mask with a round brush"),
    Shortcut("brush_bigger", ("]",), "Brush &Bigger", "Make the brush and eraser bigger", scope="canvas"),
    Shortcut("brush_smaller", ("[",), "Brush &Smaller", "Make the brush and eraser smaller", scope="canvas"),
    Shortcut(
        "all_instances", ("I",), "All &Instances", "Propose every region the heads find, not only the largest"
    ),
    Shortcut("toggle_heatmap", ("H",), "&Heatmap", "Show where the model looked (localization-head heatmap)"),
    Shortcut("fit", ("F",), "&Fit to Window", "Fit the image to the window"),
    Shortcut("zoom_in", ("+", "="), "Zoom &In", "Zoom in around the centre"),
    Shortcut("zoom_out", ("-",), "Zoom &Out", "Zoom out around the centre"),
    Shortcut("mark_done", ("Ctrl+D",), "Mark Image &Done", "Mark the current image as done (or not done)"),
    Shortcut("show_shortcuts", ("F1",), "&Keyboard Shortcuts", "This table"),
)

SHORTCUTS_BY_ACTION: dict[str, Shortcut] = {shortcut.action: shortcut for shortcut in SHORTCUTS}


def effective_keys(action: str, overrides: dict[str, tuple[str, ...]]) -> tuple[str, ...]:
    """The key sequences bound to `action`: the settings' override when there is one, else the table's default."""
    if action in overrides:
        return overrides[action]
    return SHORTCUTS_BY_ACTION[action].keys
