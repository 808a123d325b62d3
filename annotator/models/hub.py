"""LLaVA and Qwen2-VL checkpoints from the Hugging Face Hub: only the weights grounding needs, the Hub's own cache,
offline lookup.

Grounding reads the vision tower, the projector, the token embeddings and the text layers up to the deepest
localization head (docs/method.md, "How we compute it": the forward stops there); while a model's heads are unknown
every layer is read, so every shard is fetched. A plan reads the checkpoint's `model.safetensors.index.json` and
keeps only the safetensors shards holding those tensors, plus the config, tokenizer and processor files; `.bin`
(and other duplicate) weight files are never fetched. Files land in the Hugging Face cache through
`huggingface_hub.hf_hub_download`, so its layout, `HF_HOME` / `HF_HUB_CACHE`, `HF_HUB_OFFLINE` and the usual token
places apply. Free disk space is checked before the first byte.

huggingface_hub retries a dropped connection within one call but deletes its partial file when the call fails or
is cancelled, so a cut at 90 % of a 5 GB shard would start the shard again. Shards are therefore fetched first by
`download.py` (resumable `.part` file, HTTP `Range`, the LFS SHA-256 checked) straight into the blob the cache
names by that SHA-256 (`blobs/<sha256>`); `hf_hub_download` then finds the blob and only links it into the
snapshot. A cancelled or cut shard download resumes from its `.part` file next time.

A truncated download is loaded from a grounding folder in the user's cache (`.../annotator/grounding/`): links to
the cached files plus an index that names only the tensors of the fetched shards, so `LvlmEngine.load(folder,
truncate_after_layer=n)` reads exactly those files. Lookups of what is cached never touch the network.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from annotator.errors import ModelUnavailable
from annotator.download import Progress, file_sha256, user_cache_dir

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
_SHA256 = re.compile(r"[0-9a-f]{64}")
RESUMABLE_SUFFIXES = (".safetensors",)
"""Files fetched by the resumable downloader into the cache's blob (the large ones: weight shards)."""


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


def plan_download(
    repo_id: str, truncate_after_layer: int | None, *, revision: str | None = None, token: str | bool | None = None
) -> DownloadPlan:
    """Ask the Hub for the repository's files and sizes and its tensors' shards; return the plan. Nothing is
    written to disk (the index and the shards' headers are read over HTTP)."""
    from huggingface_hub import HfApi, constants
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        NotASafetensorsRepoError,
        RepositoryNotFoundError,
    )

    if constants.HF_HUB_OFFLINE:
        raise ModelUnavailable(f"cannot download {repo_id}: this machine is offline (HF_HUB_OFFLINE is set)")
    try:
        api = HfApi()
        info = api.model_info(repo_id, revision=revision, files_metadata=True, token=token)
        repo_files = {s.rfilename: int(s.size or 0) for s in info.siblings or ()}
        weight_map = api.get_safetensors_metadata(repo_id, revision=info.sha, token=token).weight_map
    except NotASafetensorsRepoError as exc:
        raise ModelUnavailable(f"{repo_id} has no safetensors weights; only safetensors checkpoints are read") from exc
    except GatedRepoError as exc:
        raise ModelUnavailable(
            f"{repo_id} is gated: accept its licence on huggingface.co and log in (`hf auth login` or HF_TOKEN)"
        ) from exc
    except RepositoryNotFoundError as exc:
        raise ModelUnavailable(f"{repo_id} is not on the Hugging Face Hub (or is private and no token is set)") from exc
    except (HfHubHTTPError, OSError, _transport_error()) as exc:
        raise ModelUnavailable(f"cannot reach the Hugging Face Hub for {repo_id}: {_first_line(exc)}") from exc
    ref = None if revision == info.sha else (revision or constants.DEFAULT_REVISION)
    return plan_files(repo_id, repo_files, weight_map, truncate_after_layer, revision=info.sha, ref=ref)


def check_free_space(bytes_needed: int, folder: str | os.PathLike[str]) -> None:
    """`ModelUnavailable` when the disk holding `folder` (or its nearest existing parent) has less free space."""
    existing = Path(folder).absolute()
    while not existing.exists():
        existing = existing.parent
    free = shutil.disk_usage(existing).free
    if free < bytes_needed:
        raise ModelUnavailable(
            f"not enough disk space in {folder}: the download needs {format_bytes(bytes_needed)} and "
            f"{format_bytes(free)} are free; free some space or point HF_HOME at a larger disk"
        )


def format_bytes(size_bytes: float) -> str:
    """A byte count in decimal units with three significant digits or more: 950 B, 1.05 MB, 9.95 GB."""
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if size_bytes >= scale:
            return f"{size_bytes / scale:.2f} {unit}"
    return f"{int(size_bytes)} B"


def missing_files(plan: DownloadPlan) -> tuple[RepoFile, ...]:
    """The plan's files not yet complete in the Hugging Face cache."""
    from huggingface_hub import try_to_load_from_cache

    return tuple(
        f
        for f in plan.files
        if not isinstance(try_to_load_from_cache(plan.repo_id, f.name, revision=plan.revision), str)
    )


def download(plan: DownloadPlan, progress: Progress | None = None, *, token: str | bool | None = None) -> Path:
    """Fetch the plan's missing files into the Hugging Face cache and return the folder to load.

    Disk space for the missing bytes is checked first. `progress(bytes_done, bytes_total)` counts the bytes of
    this plan (files already cached count as done); an exception it raises stops the download and propagates.
    A shard's partial file is kept and the next download resumes it (see the module docstring).
    """
    from huggingface_hub import constants, hf_hub_download

    todo = missing_files(plan)
    check_free_space(sum(f.size_bytes for f in todo) - partial_bytes(plan.repo_id), constants.HF_HUB_CACHE)
    done = plan.bytes_needed - sum(f.size_bytes for f in todo)
    counter = _PlanProgress(progress, done, plan.bytes_needed)
    for repo_file in todo:
        try:
            if repo_file.name.endswith(RESUMABLE_SUFFIXES):
                _fetch_blob(plan, repo_file.name, counter.file_at, token)
            hf_hub_download(
                plan.repo_id, repo_file.name, revision=plan.revision, token=token, tqdm_class=counter.tqdm_class()
            )
        except (OSError, _transport_error()) as exc:
            kept = (
                "its partial file is kept and the next download resumes it"
                if repo_file.name.endswith(RESUMABLE_SUFFIXES)
                else "the next download fetches it again"
            )
            raise ModelUnavailable(
                f"download of {plan.repo_id}/{repo_file.name} stopped ({_first_line(exc)}); {kept}"
            ) from exc
        counter.finish_file(repo_file.size_bytes)
    if plan.ref is not None and plan.files:
        _record_ref(plan, token)
    snapshot = _snapshot_folder(plan.repo_id, plan.revision)
    if snapshot is None:
        raise ModelUnavailable(f"{plan.repo_id} was downloaded but is not in the Hugging Face cache")
    if plan.truncate_after_layer is None:
        return snapshot
    return build_grounding_folder(snapshot, plan.repo_id, plan.truncate_after_layer)


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
    snapshot = _snapshot_folder(repo_id, None)
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
        if not _SHA256.fullmatch(blob.name):
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


def _snapshot_folder(repo_id: str, revision: str | None) -> Path | None:
    from huggingface_hub import try_to_load_from_cache

    try:
        found = try_to_load_from_cache(repo_id, "config.json", revision=revision)
    except ValueError:
        return None
    return Path(found).parent if isinstance(found, str) else None


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


class _PlanProgress:
    """The plan's running byte count for `progress`: the files done plus the bytes of the file in flight."""

    def __init__(self, progress: Progress | None, done: int, total: int) -> None:
        self.progress = progress
        self.done = done
        self.total = total

    def file_at(self, file_bytes: int, file_total: int | None = None) -> None:
        if self.progress is not None:
            self.progress(self.done + file_bytes, self.total)

    def finish_file(self, size_bytes: int) -> None:
        self.done += size_bytes
        self.file_at(0)

    def tqdm_class(self):
        """A tqdm class for `hf_hub_download` that reports through `file_at` (it never draws a bar)."""
        from tqdm.auto import tqdm

        plan_progress = self

        class ByteCounter(tqdm):
            def __init__(self, *args, **kwargs) -> None:
                kwargs["disable"] = True
                super().__init__(*args, **kwargs)
                self.file_bytes = int(kwargs.get("initial") or 0)
                if self.file_bytes:
                    plan_progress.file_at(self.file_bytes)

            def update(self, n: float | None = 1) -> bool | None:
                self.file_bytes += int(n or 0)
                plan_progress.file_at(self.file_bytes)
                return None

        return ByteCounter


def repo_cache_folder(repo_id: str) -> Path:
    """The repository's folder in the Hugging Face cache (its documented layout: `models--owner--name`)."""
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE) / f"models--{repo_id.replace('/', '--')}"


def partial_bytes(repo_id: str) -> int:
    """Bytes already in the repository's resumable `.part` blobs."""
    blobs = repo_cache_folder(repo_id) / "blobs"
    return sum(p.stat().st_size for p in blobs.glob("*.part")) if blobs.is_dir() else 0


def _fetch_blob(plan: DownloadPlan, name: str, on_bytes: Progress, token: str | bool | None) -> None:
    """Fetch the file `name` of the plan's commit into its cache blob `blobs/<etag>` with the resumable downloader
    (the SHA-256 checked when the etag is one, as for LFS files). Nothing to do when the blob is there."""
    from urllib.parse import urlsplit

    from huggingface_hub import get_hf_file_metadata, hf_hub_url
    from huggingface_hub.utils import build_hf_headers

    from annotator import download as http

    url = hf_hub_url(plan.repo_id, name, revision=plan.revision)
    metadata = get_hf_file_metadata(url, token=token, retry_on_errors=True)
    if not metadata.etag:
        return
    blob = repo_cache_folder(plan.repo_id) / "blobs" / metadata.etag
    if blob.is_file():
        return
    headers = build_hf_headers(token=token)
    if urlsplit(metadata.location).netloc != urlsplit(url).netloc:
        headers.pop("authorization", None)  # a signed CDN address refuses a second credential
    http.download(
        metadata.location,
        blob,
        size_bytes=metadata.size,
        sha256=metadata.etag if _SHA256.fullmatch(metadata.etag) else None,
        progress=on_bytes,
        headers=headers,
    )


def _record_ref(plan: DownloadPlan, token: str | bool | None) -> None:
    """Let huggingface_hub record that `plan.ref` points at the downloaded commit (`refs/<ref>`), so an offline
    lookup by the id alone finds the snapshot; one metadata request, no file is fetched again."""
    from huggingface_hub import hf_hub_download

    hf_hub_download(plan.repo_id, plan.files[0].name, revision=plan.ref, token=token)


def _transport_error() -> type[Exception]:
    """The HTTP client's base error that huggingface_hub lets through (no connection, DNS, timeouts)."""
    import httpx2

    return httpx2.HTTPError


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
