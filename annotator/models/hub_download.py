"""Downloads from the Hugging Face Hub: the plan asked of the Hub, the free-space check, and the fetch.

Files land in the Hugging Face cache through `huggingface_hub.hf_hub_download`, so its layout, `HF_HOME` /
`HF_HUB_CACHE`, `HF_HUB_OFFLINE` and the usual token places apply. Free disk space is checked before the first byte.

huggingface_hub retries a dropped connection within one call but deletes its partial file when the call fails or
is cancelled, so a cut at 90 % of a 5 GB shard would start the shard again. Shards are therefore fetched first by
`download.py` (resumable `.part` file, HTTP `Range`, the LFS SHA-256 checked) straight into the blob the cache
names by that SHA-256 (`blobs/<sha256>`); `hf_hub_download` then finds the blob and only links it into the
snapshot. A cancelled or cut shard download resumes from its `.part` file next time.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from annotator.download import Progress
from annotator.errors import ModelUnavailable
from annotator.models.hub_cache import (
    BLOB_SHA256,
    build_grounding_folder,
    partial_bytes,
    repo_cache_folder,
    snapshot_folder,
)
from annotator.models.hub_plan import DownloadPlan, RepoFile, plan_files

RESUMABLE_SUFFIXES = (".safetensors",)
"""Files fetched by the resumable downloader into the cache's blob (the large ones: weight shards)."""


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
    A shard's partial file is kept and the next download resumes it (see this module's docstring).
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
    snapshot = snapshot_folder(plan.repo_id, plan.revision)
    if snapshot is None:
        raise ModelUnavailable(f"{plan.repo_id} was downloaded but is not in the Hugging Face cache")
    if plan.truncate_after_layer is None:
        return snapshot
    return build_grounding_folder(snapshot, plan.repo_id, plan.truncate_after_layer)


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
        sha256=metadata.etag if BLOB_SHA256.fullmatch(metadata.etag) else None,
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
