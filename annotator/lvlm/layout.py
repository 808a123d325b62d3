"""Where the image tokens of a prompt sit: which cell of which grid each image token is (docs/method.md, part 3).

A family's vision encoder turns one image into a run of `num_tokens` consecutive tokens in the prompt. Those tokens
hold one or more grids (LLaVA-1.5 and Qwen2-VL: one; any-resolution models: a base image and its tiles), each grid
`grid_h x grid_w` cells in row-major order, optionally with extra tokens between rows (a "newline" token after each
row: then `row_stride = grid_w + 1`). Each grid carries its own `ImageFrame`, the exact map between its cells and
the original image's pixels. Attention over the image tokens becomes one map per grid with `grid_maps`; the
grounder reads the grid `map_grid` names.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from annotator.grounding.frame import ImageFrame


@dataclass(frozen=True)
class GridPlacement:
    """One grid among the image tokens: its cells start at token `start` (counted from the first image token), row r
    at `start + r * row_stride`, cell (r, c) at `start + r * row_stride + c`."""

    frame: ImageFrame
    start: int
    row_stride: int

    def __post_init__(self) -> None:
        if self.start < 0 or self.row_stride < self.frame.grid_w:
            raise ValueError(
                f"a grid of {self.frame.grid_w} columns cannot start at {self.start} with a row stride of "
                f"{self.row_stride}"
            )

    @property
    def end(self) -> int:
        """One past the grid's last token, extra tokens after its rows included."""
        return self.start + self.frame.grid_h * self.row_stride

    def positions(self) -> np.ndarray:
        """Image-token index of each cell, `[grid_h, grid_w]` int64."""
        rows = np.arange(self.frame.grid_h, dtype=np.int64)[:, None] * self.row_stride
        return self.start + rows + np.arange(self.frame.grid_w, dtype=np.int64)[None, :]


@dataclass(frozen=True)
class TokenLayout:
    """The image tokens of one image: `num_tokens` of them, holding `grids` (disjoint, in token order)."""

    grids: tuple[GridPlacement, ...]
    num_tokens: int
    map_grid: int = 0

    def __post_init__(self) -> None:
        if not self.grids:
            raise ValueError("a token layout needs at least one grid")
        if not 0 <= self.map_grid < len(self.grids):
            raise ValueError(f"map_grid {self.map_grid} is not one of the {len(self.grids)} grids")
        end = 0
        for grid in self.grids:
            if grid.start < end:
                raise ValueError(f"grids overlap at image token {grid.start}")
            end = grid.end
        if end > self.num_tokens:
            raise ValueError(f"the grids need {end} image tokens, the layout has {self.num_tokens}")

    @classmethod
    def single(cls, frame: ImageFrame) -> "TokenLayout":
        """One grid filling the image tokens, row after row with nothing between (LLaVA-1.5, Qwen2-VL)."""
        return cls(grids=(GridPlacement(frame, 0, frame.grid_w),), num_tokens=frame.grid_h * frame.grid_w)

    @property
    def frame(self) -> ImageFrame:
        """The frame of the grid maps are read from."""
        return self.grids[self.map_grid].frame

    @property
    def grid_hw(self) -> tuple[int, int]:
        return self.frame.grid_hw

    def cells(self) -> np.ndarray:
        """For each image token its (grid, row, col), `[num_tokens, 3]` int64; -1 for tokens that are no cell."""
        cells = np.full((self.num_tokens, 3), -1, dtype=np.int64)
        for index, grid in enumerate(self.grids):
            rows, cols = np.indices(grid.frame.grid_hw)
            cells[grid.positions().ravel()] = np.stack([np.full(rows.size, index), rows.ravel(), cols.ravel()], 1)
        return cells

    def grid_maps(self, values: np.ndarray) -> list[np.ndarray]:
        """Values over the image tokens (`[..., num_tokens]`) -> one `[..., grid_h, grid_w]` array per grid."""
        v = np.asarray(values)
        if v.shape[-1] != self.num_tokens:
            raise ValueError(f"{v.shape[-1]} values for {self.num_tokens} image tokens")
        return [v[..., grid.positions()] for grid in self.grids]

    def grid_map(self, values: np.ndarray) -> np.ndarray:
        """`grid_maps` of the grid maps are read from: `[..., grid_h, grid_w]`."""
        v = np.asarray(values)
        if v.shape[-1] != self.num_tokens:
            raise ValueError(f"{v.shape[-1]} values for {self.num_tokens} image tokens")
        return v[..., self.grids[self.map_grid].positions()]
