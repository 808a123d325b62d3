"""Checkpoints in the Hugging Face cache: the cache's layout, lookups, the grounding folder, checks and removal.

A truncated download is loaded from a grounding folder in the user's cache (`.../annotator/grounding/`): links to
the cached files plus an index that names only the tensors of the fetched shards, so `LvlmEngine.load(folder,
truncate_after_layer=n)` reads exactly those files. Nothing here touches the network.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from annotator.download import file_sha256, user_cache_dir
from annotator.errors import ModelUnavailable
from annotator.models.hub_plan import INDEX_FILE, SINGLE_FILE, tensor_needed

BLOB_SHA256 = re.compile(r"[0-9a-f]{64}")
"""A blob name in the cache that is the file's SHA-256 (as for LFS files)."""


@dataclass(frozen=True)
class CachedModel:
    """A model found on this machine: `path` is the folder to load (a Hub snapshot, or a grounding folder for a
    truncated download), `size_bytes` the bytes of its files on disk."""

    repo_id: str
    path: Path
    truncate_after_layer: int | None
    size_bytes: int


@dataclass(frozen=True)
class VerifyReport:
    """`checked`: files whose SHA-256 was compared with the Hub's (the cache's blob names); `problems`: what is
    missing or does not match, one line each."""

    checked: int
    problems: tuple[str, ...]


def repo_cache_folder(repo_id: str) -> Path:
    """The repository's folder in the Hugging Face cache (its documented layout: `models--owner--name`)."""
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE) / f"models--{repo_id.replace('/', '--')}"


def partial_bytes(repo_id: str) -> int:
    """Bytes already in the repository's resumable `.part` blobs."""
    blobs = repo_cache_folder(repo_id) / "blobs"
    return sum(p.stat().st_size for p in blobs.glob("*.part")) if blobs.is_dir() else 0


def snapshot_folder(repo_id: str, revision: str | None) -> Path | None:
    """The snapshot folder of `revision` (None: `main`) in the cache, found by its config.json; else None."""
    from huggingface_hub import try_to_load_from_cache

    try:
        found = try_to_load_from_cache(repo_id, "config.json", revision=revision)
    except ValueError:
        return None
    return Path(found).parent if isinstance(found, str) else None


def grounding_folder(repo_id: str, truncate_after_layer: int) -> Path:
    """Where the truncated download of `repo_id` is assembled for loading."""
    return user_cache_dir() / "grounding" / f"{repo_id.replace('/', '--')}-layers-0-{truncate_after_layer}"


def build_grounding_folder(snapshot: str | os.PathLike[str], repo_id: str, truncate_after_layer: int) -> Path:
    """Links to the snapshot's files and an index naming only the tensors of its shards; returns the folder.

    The snapshot must hold every shard with a tensor grounding up to `truncate_after_layer` needs."""
    snapshot = Path(snapshot)
    folder = grounding_folder(repo_id, truncate_after_layer)
    folder.mkdir(parents=True, exist_ok=True)
    index_path = snapshot / INDEX_FILE
    for source in snapshot.iterdir():
        if source.name != INDEX_FILE and source.is_file():
            _link(source.resolve(), folder / source.name)
    if index_path.is_file():
        index = json.loads(index_path.read_text(encoding="utf-8"))
        present = {name: shard for name, shard in index["weight_map"].items() if (snapshot / shard).is_file()}
        lacking = [t for t in index["weight_map"] if t not in present and tensor_needed(t, truncate_after_layer)]
        if lacking:
            raise ModelUnavailable(
                f"{repo_id} in {snapshot} lacks the shard of {lacking[0]} (and {len(lacking) - 1} more tensors)"
            )
        index["weight_map"] = present
        (folder / INDEX_FILE).write_text(json.dumps(index, indent=2), encoding="utf-8")
    return folder


def find_cached(repo_id: str, truncate_after_layer: int | None = None) -> CachedModel | None:
    """The whole model in the Hugging Face cache, else (when `truncate_after_layer` is given) its complete
    grounding folder, else None. Reads local files only."""
    snapshot = snapshot_folder(repo_id, None)
    if snapshot is not None and _complete(snapshot, None):
        return CachedModel(repo_id, snapshot, None, _folder_bytes(snapshot))
    if truncate_after_layer is not None:
        folder = grounding_folder(repo_id, truncate_after_layer)
        if folder.is_dir() and _complete(folder, truncate_after_layer):
            return CachedModel(repo_id, folder, truncate_after_layer, _folder_bytes(folder))
    return None


def require_cached(
    repo_id: str, truncate_after_layer: int | None = None, preset_name: str | None = None
) -> CachedModel:
    """`find_cached`, or `ModelUnavailable` saying where it was looked for and how to get it."""
    from huggingface_hub import constants

    found = find_cached(repo_id, truncate_after_layer)
    if found is not None:
        return found
    offline = " and this machine is offline (HF_HUB_OFFLINE is set)" if constants.HF_HUB_OFFLINE else ""
    raise ModelUnavailable(
        f"{repo_id} is not downloaded (not in the Hugging Face cache {constants.HF_HUB_CACHE}){offline}; "
        f"run `annotator models download {preset_name or repo_id}` while online, or choose a local model folder"
    )


def verify(model: CachedModel) -> VerifyReport:
    """Compare every cached weight file's SHA-256 with the one the Hub gave it (its blob's name in the cache) and
    check that each shard the index names is there. Offline."""
    problems: list[str] = []
    index_path = model.path / INDEX_FILE
    if index_path.is_file():
        shards = set(json.loads(index_path.read_text(encoding="utf-8"))["weight_map"].values())
        problems += [f"{shard} is missing" for shard in sorted(shards) if not (model.path / shard).is_file()]
    checked = 0
    for path in sorted(model.path.glob("*.safetensors")):
        if not path.exists():
            continue
        blob = path.resolve()
        if not BLOB_SHA256.fullmatch(blob.name):
            continue
        checked += 1
        digest = file_sha256(blob)
        if digest != blob.name:
            problems.append(f"{path.name} has SHA-256 {digest}, expected {blob.name}")
    return VerifyReport(checked, tuple(problems))


def remove(repo_id: str) -> int:
    """Delete `repo_id` from the Hugging Face cache (partial shards too) and its grounding folders; returns the
    bytes freed."""
    from huggingface_hub import constants, scan_cache_dir

    freed = 0
    if Path(constants.HF_HUB_CACHE).is_dir():
        cache = scan_cache_dir(constants.HF_HUB_CACHE)
        for repo in cache.repos:
            if repo.repo_id == repo_id and repo.repo_type == "model":
                strategy = cache.delete_revisions(*(r.commit_hash for r in repo.revisions))
                freed += strategy.expected_freed_size
                strategy.execute()
    blobs = repo_cache_folder(repo_id) / "blobs"
    for part in blobs.glob("*.part") if blobs.is_dir() else ():
        freed += part.stat().st_size
        part.unlink()
    for folder in (user_cache_dir() / "grounding").glob(f"{repo_id.replace('/', '--')}-layers-0-*"):
        freed += sum(p.lstat().st_size for p in folder.iterdir())
        shutil.rmtree(folder)
    return freed


def _complete(folder: Path, truncate_after_layer: int | None) -> bool:
    """The folder holds a config and every shard (of the tensors needed) its index names, or one model file."""
    if not (folder / "config.json").is_file():
        return False
    index_path = folder / INDEX_FILE
    if not index_path.is_file():
        return (folder / SINGLE_FILE).is_file()
    weight_map = json.loads(index_path.read_text(encoding="utf-8"))["weight_map"]
    shards = {s for t, s in weight_map.items() if tensor_needed(t, truncate_after_layer)}
    return all((folder / shard).is_file() for shard in shards)


def _folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.iterdir() if p.is_file())


def _link(target: Path, link: Path) -> None:
    """`link` pointing at `target`: a symbolic link, else a hard link, else a copy (Windows without rights)."""
    if link.is_symlink() or link.exists():
        if link.resolve() == target:
            return
        link.unlink()
    try:
        link.symlink_to(target)
    except OSError:
        try:
            os.link(target, link)
        except OSError:
            shutil.copy2(target, link)
