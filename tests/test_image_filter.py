"""The image list's filter: known answers for text, status and review order over `ImageColumns`, and the panel
keeping the chosen image current across filters without announcing it again."""

from __future__ import annotations

from PySide6.QtCore import Qt

from annotator.project.image_filter import ImageColumns, ImageFilter, review_key
from annotator.project.records import ImageRecord
from annotator.ui.image_list import ImageListPanel


def record(image_id: int, path: str, status: str = "todo", n_pending: int = 0, error: str | None = None):
    return ImageRecord(image_id, path, 64, 48, True, status, n_pending, 0, 0, error)


RECORDS = [
    record(1, "batch_01/IMG_a.jpg", "done"),
    record(2, "batch_01/img_B.jpg", "in_progress", n_pending=2),
    record(3, "batch_02/IMG_b2.jpg", "todo", n_pending=1),
    record(4, "batch_02/other.png", "todo", error="truncated header"),
    record(5, "batch_03/IMG_b3.jpg", "in_progress", n_pending=3),
    record(6, "batch_03/IMG_c.jpg", "todo"),
]
SCORES = {2: 0.7, 5: 0.2}


def test_the_text_matches_any_part_of_the_path_in_any_case():
    columns = ImageColumns(RECORDS)
    assert columns.select(ImageFilter.of("  IMG_B ", "all", "natural"), {}) == [1, 2, 4]
    assert columns.select(ImageFilter.of("batch_02", "all", "natural"), {}) == [2, 3]
    assert columns.select(ImageFilter.of("", "all", "natural"), {}) == [0, 1, 2, 3, 4, 5]
    assert columns.select(ImageFilter.of("nothing", "all", "natural"), {}) == []


def test_the_status_filter_reads_unreadable_images_as_errors_and_pending_as_having_proposals():
    columns = ImageColumns(RECORDS)
    assert columns.select(ImageFilter.of("", "todo", "natural"), {}) == [2, 5]  # image 4 cannot be read
    assert columns.select(ImageFilter.of("", "pending", "natural"), {}) == [1, 2, 4]
    assert columns.select(ImageFilter.of("b", "pending", "natural"), {}) == [1, 2, 4]
    assert columns.select(ImageFilter.of("img_b", "in_progress", "natural"), {}) == [1, 4]


def test_the_review_order_puts_the_lowest_score_first_then_unscored_pending_then_the_rest_in_folder_order():
    columns = ImageColumns(RECORDS)
    # keys by row: 3.0, 0.7, 2.0 (pending, no score), 3.0, 0.2, 3.0
    assert [review_key(r.n_pending, SCORES.get(r.id)) for r in RECORDS] == [3.0, 0.7, 2.0, 3.0, 0.2, 3.0]
    assert columns.select(ImageFilter.of("", "all", "least_confident"), SCORES) == [4, 1, 2, 0, 3, 5]
    assert columns.select(ImageFilter.of("batch_0", "todo", "least_confident"), SCORES) == [2, 5]


def test_an_updated_record_is_filtered_by_its_new_fields():
    columns = ImageColumns(RECORDS)
    columns.update(5, record(6, "batch_03/IMG_c.jpg", "done"))
    assert columns.select(ImageFilter.of("", "done", "natural"), {}) == [0, 5]


def test_unknown_names_mean_everything_in_folder_order():
    wanted = ImageFilter.of("", "bogus", "sideways")
    assert wanted == ImageFilter() and not wanted.active
    assert ImageFilter.of("x", "all", "natural").active


def test_the_panel_filters_keeps_the_chosen_image_and_walks_the_review_order(qtbot):
    panel = ImageListPanel()
    qtbot.addWidget(panel)
    panel.show()
    panel.set_records(RECORDS)
    chosen: list[int] = []
    panel.image_chosen.connect(chosen.append)
    assert panel.select_image(3) and chosen == [3]
    assert not panel.filtering and panel.visible_count() == 6

    panel.filter_box.setText("IMG_B")
    assert panel.filtering and panel.visible_count() == 3
    assert panel.position_of(3) == 1 and panel.current_image_id() == 3
    panel.filter_box.setText("batch_03")
    assert panel.position_of(3) is None and panel.current_image_id() is None
    assert panel.neighbour(3, +1) == 5  # not listed: the first one
    panel.filter_box.clear()
    assert panel.current_image_id() == 3 and panel.position_of(3) == 2
    assert chosen == [3]  # made current again quietly: it is the image already shown

    panel.model.set_pending_scores(SCORES)
    panel.order.setCurrentIndex(panel.order.findData("least_confident"))
    assert [panel.neighbour(None, +1), panel.neighbour(5, +1), panel.neighbour(2, +1)] == [5, 2, 3]
    assert panel.neighbour(6, +1) is None and panel.neighbour(5, -1) is None
    panel.status_filter.setCurrentIndex(panel.status_filter.findData("pending"))
    assert panel.visible_count() == 3 and panel.neighbour(None, -1) == 3


def test_an_updated_record_repaints_its_listed_row(qtbot):
    panel = ImageListPanel()
    qtbot.addWidget(panel)
    panel.set_records(RECORDS)
    panel.filter_box.setText("batch_03")
    with qtbot.waitSignal(panel.proxy.dataChanged) as changed:
        panel.model.update_record(record(6, "batch_03/IMG_c.jpg", "done", n_pending=4))
    assert changed.args[0].row() == changed.args[1].row() == 1
    assert panel.proxy.data(panel.proxy.index(1), Qt.ItemDataRole.DisplayRole) == "IMG_c.jpg  (4 pending)"
    with qtbot.assertNotEmitted(panel.proxy.dataChanged):
        panel.model.update_record(record(1, "batch_01/IMG_a.jpg", "todo"))


def test_new_records_start_with_nothing_current(qtbot):
    panel = ImageListPanel()
    qtbot.addWidget(panel)
    panel.set_records(RECORDS)
    panel.select_image(2)
    panel.set_records(RECORDS[:3])
    panel.filter_box.setText("img")
    assert panel.current_image_id() is None and panel.visible_count() == 3
