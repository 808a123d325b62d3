"""The models the app, the CLI and the docs offer, read from `resources/models.json`.

Three kinds: vision-language checkpoints on the Hugging Face Hub (LLaVA-1.5, Qwen2-VL, Qwen2.5-VL: their family,
size, GPU memory estimates and, where someone measured them, their shipped heads file), the official SAM
checkpoints (whose URL, byte size and SHA-256 are `segment.SAM_CHECKPOINTS`, read from there, never written twice)
and the planted demo models shipped in `resources/models/` (each with its own heads.json). A checkpoint without
known heads cannot be truncated: its download is every shard, and its heads are found with `annotator find-heads`
(or the app's "Find heads on this folder") first. `local_copy` says what of a preset is on this machine (offline)
and `download_sam` fetches a SAM checkpoint after checking the disk. No Qt, and no torch until a SAM preset's
checkpoint is asked for.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from annotator.errors import ModelUnavailable
from annotator.grounding.heads import HeadsFile
from annotator.paths import HEADS_DIR, MODELS_DIR, RESOURCES

if TYPE_CHECKING:
    from annotator.download import Progress
    from annotator.segmentation.catalog import CheckpointSpec

PRESETS_FILE = RESOURCES / "models.json"


UNKNOWN = "-"
"""How the presets file writes an estimate that needs heads nobody measured yet."""


@dataclass(frozen=True)
class GpuMemoryEstimate:
    """Weights on the GPU in GB (1e9 bytes): the whole model, truncated after the deepest localization head (None
    while the heads are unknown), and truncated with 4-bit text layers (None where 4-bit is not offered or the
    heads are unknown)."""

    full_gb: float
    truncated_gb: float | None
    truncated_4bit_gb: float | None


@dataclass(frozen=True)
class LvlmPreset:
    """A vision-language checkpoint on the Hub. `family` is the engine's family name ("llava-1.5", "qwen2-vl",
    "qwen2.5-vl"); `heads_file` is the path of its shipped localization heads file, None where no heads are known
    yet; `parameters` its parameter count and `size_on_disk_gb` its safetensors shards."""

    name: str
    hub_id: str
    family: str
    heads_file: Path | None
    default_dtype: str
    num_layers: int
    parameters: int
    size_on_disk_gb: float
    supports_4bit: bool
    gpu_memory: GpuMemoryEstimate
    description: str

    @property
    def heads_known(self) -> bool:
        """Whether localization heads ship for this checkpoint (else `annotator find-heads` must find them)."""
        return self.heads_file is not None

    @property
    def deepest_head_layer(self) -> int | None:
        """The deepest layer (0-based) holding one of the localization heads: the truncation point. None while no
        heads are known: nothing can be left out, every shard is needed."""
        if self.heads_file is None:
            return None
        return max(layer for layer, _ in HeadsFile.load(self.heads_file).heads)


@dataclass(frozen=True)
class SamPreset:
    """A mask model: an official Segment Anything checkpoint (`model_type` vit_h, vit_l, vit_b: a .pth file in the
    user cache) or a SAM 2.1 / SAM-HQ checkpoint on the Hugging Face Hub (`model_type` sam2.1-tiny, ...,
    sam-hq-vit_b, ...: in the Hugging Face cache), as `segmentation.catalog` names them."""

    name: str
    model_type: str
    description: str

    @property
    def hub_id(self) -> str | None:
        """The Hub repository of a SAM 2.1 / SAM-HQ preset (from `catalog`), None for an official SAM checkpoint."""
        from annotator.segmentation.catalog import MASK_MODELS, hub_model

        if self.model_type not in MASK_MODELS:
            raise ModelUnavailable(f"SAM preset {self.name} names unknown model type {self.model_type!r}")
        found = hub_model(self.model_type)
        return None if found is None else found.hub_id

    @property
    def checkpoint(self) -> "CheckpointSpec":
        """URL, byte size and SHA-256 of an official SAM checkpoint, from `catalog.SAM_CHECKPOINTS`."""
        from annotator.segmentation.catalog import SAM_CHECKPOINTS

        if self.model_type not in SAM_CHECKPOINTS:
            raise ModelUnavailable(f"SAM preset {self.name} names unknown model type {self.model_type!r}")
        return SAM_CHECKPOINTS[self.model_type]


@dataclass(frozen=True)
class DemoPreset:
    """A planted demo model: a folder shipped with the app (`folder`, absolute) holding its own heads.json."""

    name: str
    folder: Path
    family: str
    description: str

    @property
    def heads_known(self) -> bool:
        """Whether its folder holds its heads (heads.json)."""
        return (self.folder / "heads.json").is_file()


Preset = LvlmPreset | SamPreset | DemoPreset


@dataclass(frozen=True)
class Presets:
    """Every preset of a presets file, in file order."""

    lvlm: tuple[LvlmPreset, ...]
    sam: tuple[SamPreset, ...]
    demos: tuple[DemoPreset, ...]

    @property
    def demo(self) -> DemoPreset:
        """The first demo model (planted LLaVA): the one the app falls back to."""
        return self.demos[0]

    @property
    def all(self) -> tuple[Preset, ...]:
        return (*self.lvlm, *self.sam, *self.demos)

    def get(self, name: str) -> Preset:
        """The preset called `name` (or, for LLaVA, its hub id); `ModelUnavailable` listing the names if none."""
        for preset in self.all:
            if name == preset.name or (isinstance(preset, LvlmPreset) and name == preset.hub_id):
                return preset
        raise ModelUnavailable(f"no model preset {name!r}; the presets are {', '.join(p.name for p in self.all)}")


def load_presets(path: str | Path = PRESETS_FILE) -> Presets:
    """Read a presets file; a missing or malformed one raises `ModelUnavailable` naming the file and the entry."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        lvlm = tuple(_lvlm(entry) for entry in data["lvlm"])
        sam = tuple(SamPreset(e["name"], e["model_type"], e.get("description", "")) for e in data["sam"])
        demos = tuple(
            DemoPreset(e["name"], MODELS_DIR / e["folder"], e["family"], e.get("description", "")) for e in data["demo"]
        )
        if not demos:
            raise ValueError("'demo' lists no model")
    except OSError as exc:
        raise ModelUnavailable(f"cannot read the model presets {path}: {exc.strerror or exc}") from exc
    except (ValueError, KeyError, TypeError) as exc:
        raise ModelUnavailable(f"the model presets {path} are malformed: {type(exc).__name__} {exc}") from exc
    names = [p.name for p in (*lvlm, *sam, *demos)]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ModelUnavailable(f"the model presets {path} name {', '.join(duplicates)} more than once")
    return Presets(lvlm, sam, demos)


def _lvlm(entry: dict) -> LvlmPreset:
    memory = entry["gpu_memory_gb"]
    supports_4bit = bool(entry["supports_4bit"])
    heads_file = entry["heads_file"]
    truncated = _estimate(memory["truncated"], entry["name"], heads_file)
    return LvlmPreset(
        name=entry["name"],
        hub_id=entry["hub_id"],
        family=entry["family"],
        heads_file=None if heads_file is None else HEADS_DIR / heads_file,
        default_dtype=entry["default_dtype"],
        num_layers=int(entry["num_layers"]),
        parameters=int(entry["parameters"]),
        size_on_disk_gb=float(entry["size_on_disk_gb"]),
        supports_4bit=supports_4bit,
        gpu_memory=GpuMemoryEstimate(
            full_gb=float(memory["full"]),
            truncated_gb=truncated,
            truncated_4bit_gb=_estimate(memory["truncated_4bit"], entry["name"], heads_file) if supports_4bit else None,
        ),
        description=entry.get("description", ""),
    )


def _estimate(value: object, name: str, heads_file: str | None) -> float | None:
    """A truncated memory estimate: a number where the heads are known, "-" where they are not."""
    if heads_file is None:
        if value != UNKNOWN:
            raise ValueError(f"{name} has no heads_file, so its truncated estimates must be {UNKNOWN!r}")
        return None
    return float(value)


_PARTIAL = "partial download (resumed by the next download)"


@dataclass(frozen=True)
class LocalCopy:
    """What of a preset is on this machine: `path` (folder or file), `size_bytes` on disk, `complete` (loadable),
    and `note` in words ("whole model", "layers 0-14", "partial download")."""

    path: Path
    size_bytes: int
    complete: bool
    note: str


def local_copy(preset: Preset) -> LocalCopy | None:
    """The preset's files on this machine, or None; reads local files only."""
    if isinstance(preset, DemoPreset):
        size = sum(p.stat().st_size for p in preset.folder.iterdir() if p.is_file()) if preset.folder.is_dir() else 0
        return LocalCopy(preset.folder, size, True, "ships with the app") if size else None
    if isinstance(preset, SamPreset) and preset.hub_id is None:
        from annotator.download import partial_path
        from annotator.segmentation.segment import checkpoint_path

        path = checkpoint_path(preset.model_type)
        if path.is_file():
            return LocalCopy(path, path.stat().st_size, True, "checkpoint")
        part = partial_path(path)
        if part.is_file():
            return LocalCopy(part, part.stat().st_size, False, _PARTIAL)
        return None
    from annotator.models import hub

    cached = hub.find_cached(preset.hub_id, preset.deepest_head_layer if isinstance(preset, LvlmPreset) else None)
    if cached is None:
        partial = hub.partial_bytes(preset.hub_id)
        if partial:
            return LocalCopy(hub.repo_cache_folder(preset.hub_id), partial, False, _PARTIAL)
        return None
    layers = cached.truncate_after_layer
    return LocalCopy(cached.path, cached.size_bytes, True, "whole model" if layers is None else f"layers 0-{layers}")


def download_sam(preset: SamPreset, progress: "Progress | None" = None) -> Path:
    """The preset's checkpoint, downloaded (resumably, checked) when absent; the free disk space is checked before
    the first byte. An official SAM checkpoint lands in the user's cache (size and SHA-256 checked), a SAM 2.1 or
    SAM-HQ one in the Hugging Face cache through `hub.plan_download` / `hub.download`."""
    from annotator.download import partial_path
    from annotator.models import hub
    from annotator.segmentation.segment import checkpoint_path, download_checkpoint

    if preset.hub_id is not None:
        cached = hub.find_cached(preset.hub_id)
        return cached.path if cached is not None else hub.download(hub.plan_download(preset.hub_id, None), progress)
    path = checkpoint_path(preset.model_type)
    if path.is_file():
        return path
    part = partial_path(path)
    hub.check_free_space(preset.checkpoint.size_bytes - (part.stat().st_size if part.is_file() else 0), path.parent)
    return download_checkpoint(preset.model_type, progress)
