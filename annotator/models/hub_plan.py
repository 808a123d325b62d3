"""What to fetch of a Hub checkpoint: its safetensors index, which tensors grounding reads, and the plan.

A plan reads the checkpoint's `model.safetensors.index.json` and keeps only the safetensors shards holding the
tensors grounding up to the deepest localization head reads, plus the config, tokenizer and processor files; `.bin`
(and other duplicate) weight files are never fetched. Pure logic: no network, no disk.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from annotator.errors import ModelUnavailable

INDEX_FILE = "model.safetensors.index.json"
SINGLE_FILE = "model.safetensors"
DUPLICATE_WEIGHT_SUFFIXES = (".bin", ".pt", ".pth", ".h5", ".msgpack", ".ckpt", ".onnx", ".gguf", ".ot")
"""Weight formats that repeat what the safetensors files hold; never downloaded."""

_TEXT_MODEL = r"(?:^|\.)(?:language_model\.model|model\.language_model|language_model|model)\."
"""Where a checkpoint keeps its text model: `language_model.model.` (LLaVA on the Hub), `model.language_model.`
(transformers' newer saves), `model.` (Qwen2-VL and Qwen2.5-VL on the Hub, beside `visual.`)."""
_LAYER = re.compile(_TEXT_MODEL + r"layers\.(\d+)\.")
_TEXT_NORM = re.compile(_TEXT_MODEL + r"norm\.")
_LM_HEAD = re.compile(r"(?:^|\.)lm_head\.")


@dataclass(frozen=True)
class RepoFile:
    """One file of a Hub repository and its size in bytes."""

    name: str
    size_bytes: int


@dataclass(frozen=True)
class DownloadPlan:
    """The files to fetch from `repo_id` for grounding up to `truncate_after_layer` (None: the whole model), and
    the safetensors shards left out. Byte counts are the repository's file sizes."""

    repo_id: str
    revision: str | None
    truncate_after_layer: int | None
    files: tuple[RepoFile, ...]
    skipped: tuple[RepoFile, ...]
    ref: str | None = None
    """The branch or tag the plan was made for ("main" by default), recorded in the cache once all files are in
    (`revision` is the commit it pointed at, so every file comes from that one commit)."""

    @property
    def bytes_needed(self) -> int:
        return sum(f.size_bytes for f in self.files)

    @property
    def bytes_saved(self) -> int:
        """Bytes of the shards not fetched, compared with the whole safetensors checkpoint."""
        return sum(f.size_bytes for f in self.skipped)


def tensor_needed(name: str, truncate_after_layer: int | None) -> bool:
    """Whether grounding up to `truncate_after_layer` reads the checkpoint tensor `name` (every tensor for None).

    Left out: the LM head and the text layers above the truncation layer (the final norm runs after the last
    layer, so with truncation it is never read either)."""
    if truncate_after_layer is None:
        return True
    if _LM_HEAD.search(name):
        return False
    layer = _LAYER.search(name)
    if layer is not None:
        return int(layer[1]) <= truncate_after_layer
    return not _TEXT_NORM.search(name)


def plan_files(
    repo_id: str,
    repo_files: Mapping[str, int],
    weight_map: Mapping[str, str] | None,
    truncate_after_layer: int | None,
    revision: str | None = None,
    ref: str | None = None,
) -> DownloadPlan:
    """The plan for a repository listing (`name -> bytes`) and its safetensors index's `weight_map` (None when the
    checkpoint is one `model.safetensors`, which is fetched whole)."""
    if weight_map is None:
        if SINGLE_FILE not in repo_files:
            raise ModelUnavailable(f"{repo_id} has neither {INDEX_FILE} nor {SINGLE_FILE}; only safetensors are read")
        shards_needed = {SINGLE_FILE}
        shards_all = {SINGLE_FILE}
    else:
        shards_all = set(weight_map.values())
        shards_needed = {shard for tensor, shard in weight_map.items() if tensor_needed(tensor, truncate_after_layer)}
        absent = sorted(shards_all - set(repo_files))
        if absent:
            raise ModelUnavailable(f"{repo_id}'s {INDEX_FILE} names shards the repository lacks: {', '.join(absent)}")
    files, skipped = [], []
    for name, size in sorted(repo_files.items()):
        if name in shards_all:
            (files if name in shards_needed else skipped).append(RepoFile(name, size))
        elif not name.endswith((".safetensors", *DUPLICATE_WEIGHT_SUFFIXES)):
            files.append(RepoFile(name, size))
    return DownloadPlan(repo_id, revision, truncate_after_layer, tuple(files), tuple(skipped), ref)
