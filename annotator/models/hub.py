"""Checkpoints from the Hugging Face Hub (LLaVA, Qwen2-VL, and the SAM 2.1 and SAM-HQ mask models): only the
weights grounding needs, the Hub's own cache, offline lookup.

Grounding reads the vision tower, the projector, the token embeddings and the text layers up to the deepest
localization head (docs/method.md, "How we compute it": the forward stops there); while a model's heads are unknown
every layer is read, so every shard is fetched. Its parts, each importable from here:

- `hub_plan`: the checkpoint's safetensors index, which tensors grounding reads (`tensor_needed`), and the plan of
  the files to fetch (`plan_files`, `DownloadPlan`); pure logic.
- `hub_download`: the plan asked of the Hub (`plan_download`), the free-space check, and `download`, which fetches
  shards resumably into the cache's blobs before `hf_hub_download` links them into the snapshot.
- `hub_cache`: the cache's layout, lookups that never touch the network (`find_cached`, `require_cached`), the
  grounding folder a truncated download is loaded from, `verify` and `remove`.
"""

from annotator.models.hub_cache import (
    BLOB_SHA256,
    CachedModel,
    VerifyReport,
    build_grounding_folder,
    find_cached,
    grounding_folder,
    partial_bytes,
    remove,
    repo_cache_folder,
    require_cached,
    snapshot_folder,
    verify,
)
from annotator.models.hub_download import (
    RESUMABLE_SUFFIXES,
    check_free_space,
    download,
    format_bytes,
    missing_files,
    plan_download,
)
from annotator.models.hub_plan import (
    DUPLICATE_WEIGHT_SUFFIXES,
    INDEX_FILE,
    SINGLE_FILE,
    DownloadPlan,
    RepoFile,
    plan_files,
    tensor_needed,
)

__all__ = [
    "BLOB_SHA256",
    "DUPLICATE_WEIGHT_SUFFIXES",
    "INDEX_FILE",
    "RESUMABLE_SUFFIXES",
    "SINGLE_FILE",
    "CachedModel",
    "DownloadPlan",
    "RepoFile",
    "VerifyReport",
    "build_grounding_folder",
    "check_free_space",
    "download",
    "find_cached",
    "format_bytes",
    "grounding_folder",
    "missing_files",
    "partial_bytes",
    "plan_download",
    "plan_files",
    "remove",
    "repo_cache_folder",
    "require_cached",
    "snapshot_folder",
    "tensor_needed",
    "verify",
]
