"""The session's backend in the app: proposals and masks come from the inference worker thread."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from annotator.review.pending import SegmentRequest
from annotator.ui.worker import InferenceClient


class WorkerBackend:
    """`ReviewBackend` over an `InferenceClient`; `image_path(image_id)` finds an image of the open project."""

    def __init__(self, client: InferenceClient, image_path: Callable[[int], Path]) -> None:
        self.client = client
        self.image_path = image_path

    def propose(self, image_id: int, expression: str, all_instances: bool) -> int:
        return self.client.propose(image_id, self.image_path(image_id), expression, all_instances)

    def segment(self, request: SegmentRequest) -> int:
        return self.client.segment(
            request.image_id, self.image_path(request.image_id), request.key, request.purpose, request.box_xyxy,
            request.points, previous_box_xyxy=request.previous_box_xyxy, previous_mask=request.previous_mask,
            droppable=request.droppable,
        )  # fmt: skip

    def move_on(self) -> None:
        self.client.move_on()
