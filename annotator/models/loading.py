"""From a model reference to a loaded grounder: the one loading path of the app, the CLI and the Ray actors.

A reference is a local model folder of a supported family (LLaVA-1.5, Qwen2-VL, Qwen2.5-VL, saved with
`save_pretrained`), a Hugging Face hub id ("owner/name") or the name of a preset (resources/models.json).
`known_heads` says whether a model's localization heads are known; `load_discovery_engine` loads every layer of a
model whose heads are not, for head discovery. A hub model is loaded from this machine's copy, found without
the network: the whole snapshot, or the grounding folder a truncated download assembled, so the shards it left
out are never asked of the Hub. A hub model that is not here is refused with the command that downloads it, or,
when the caller says `fetch`, downloaded first: only the files grounding needs (`hub.plan_download`).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from annotator.errors import ModelUnavailable
from annotator.models import hub

if TYPE_CHECKING:
    import torch

    from annotator.download import Progress
    from annotator.grounding.grounder import Grounder
    from annotator.grounding.heads import HeadsFile
    from annotator.lvlm.engine import LvlmEngine
    from annotator.models.presets import LvlmPreset


def lvlm_preset(model: str) -> "LvlmPreset | None":
    """The vision-language preset named `model` (by its name or hub id), or None."""
    from annotator.models.presets import load_presets

    for preset in load_presets().lvlm:
        if model in (preset.name, preset.hub_id):
            return preset
    return None


def hub_id_of(model: str) -> str | None:
    """The hub id `model` names (itself, or a preset's), or None when it names a local folder (existing or not)."""
    if Path(model).expanduser().exists():
        return None
    preset = lvlm_preset(model)
    if preset is not None:
        return preset.hub_id
    if model.startswith(("/", ".", "~")) or "\\" in model or model.count("/") != 1:
        return None
    return model


def display_name(model: str) -> str:
    """How messages name `model`: its preset's name, else the last part of its hub id or folder."""
    preset = lvlm_preset(model)
    if preset is not None:
        return preset.name
    return Path(model.rstrip("/\\")).name or model


def known_heads(model: str) -> "HeadsFile | None":
    """The localization heads known for `model`: shipped in resources/heads/ (by hub id, alias or preset), else its
    folder's heads.json; None when nobody found them yet. A broken heads file raises `ValueError` naming it."""
    from annotator.grounding.heads import find_heads_file

    return find_heads_file(hub_id_of(model) or model)


def load_discovery_engine(
    model: str, *, device: "str | torch.device | None" = None, dtype: "torch.dtype | None" = None
) -> "LvlmEngine":
    """Every layer of `model` from this machine's files, as head discovery reads them (nothing is truncated
    before the heads are known); `ModelUnavailable` when it is not here (see `model_folder`)."""
    from annotator.lvlm.engine import LvlmEngine

    folder = model_folder(model, None)
    return LvlmEngine.load(folder, device=device, dtype=dtype, prefix_cache_size=0, model_id=hub_id_of(model) or model)


def missing_model_message(model: str, truncate_after_layer: int | None) -> str | None:
    """Why `model` cannot be loaded from this machine's files, or None when it can: a hub model not here, or a local
    folder that is missing or not a model folder (its files' contents are checked when it loads). Never touches
    the network."""
    try:
        model_folder(model, truncate_after_layer)
    except ModelUnavailable as exc:
        return str(exc)
    return None


def model_folder(
    model: str, truncate_after_layer: int | None, *, fetch: bool = False, progress: "Progress | None" = None
) -> str:
    """The local folder to load `model` from, for grounding up to `truncate_after_layer` (None: the whole model).

    A hub model not on this machine raises `ModelUnavailable` naming the cache and the download command, unless
    `fetch` is set and the machine is online: then the files grounding needs are downloaded first, reporting
    `progress(bytes_done, bytes_total)`."""
    from huggingface_hub import constants

    repo_id = hub_id_of(model)
    if repo_id is None:
        folder = Path(model).expanduser()
        check_model_folder(folder)
        return str(folder)
    cached = hub.find_cached(repo_id, truncate_after_layer)
    if cached is not None:
        return str(cached.path)
    preset = lvlm_preset(repo_id)
    if not fetch or constants.HF_HUB_OFFLINE:
        hub.require_cached(repo_id, truncate_after_layer, None if preset is None else preset.name)
    return str(hub.download(hub.plan_download(repo_id, truncate_after_layer), progress))


_GIVE_A_MODEL = (
    "give a folder saved with save_pretrained (the model and its processor), a hub id such as "
    "llava-hf/llava-1.5-7b-hf, or a preset name from 'annotator models list'"
)
_PROCESSOR_CONFIGS = ("processor_config.json", "preprocessor_config.json")
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "tokenizer_config.json")
_WEIGHTS_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)


def check_model_folder(folder: str | Path) -> None:
    """`ModelUnavailable` unless `folder` holds what `save_pretrained` writes: config.json, the processor's files
    and the weights. Looks at file names only (a damaged file is found when it loads)."""
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise ModelUnavailable(f"no LLaVA-1.5 folder at {folder}; {_GIVE_A_MODEL}")
    names = {path.name for path in folder.iterdir()}
    if "config.json" not in names:
        raise ModelUnavailable(f"{folder} is not a model folder (no config.json); {_GIVE_A_MODEL}")
    if names.isdisjoint(_PROCESSOR_CONFIGS) or names.isdisjoint(_TOKENIZER_FILES):
        raise ModelUnavailable(
            f"{folder} has no processor files ({' or '.join(_PROCESSOR_CONFIGS)}, and tokenizer.json or "
            f"tokenizer.model); save the processor beside the model with processor.save_pretrained({str(folder)!r})"
        )
    if names.isdisjoint(_WEIGHTS_FILES):
        raise ModelUnavailable(
            f"{folder} has no weights (model.safetensors, or model.safetensors.index.json and its shards); "
            f"save the model there with model.save_pretrained or download it again"
        )
    for index_name in sorted(names & {"model.safetensors.index.json", "pytorch_model.bin.index.json"}):
        _check_shards(folder, index_name)


def _check_shards(folder: Path, index_name: str) -> None:
    """The shards a weights index names must lie beside it."""
    import json

    try:
        weight_map = json.loads((folder / index_name).read_text(encoding="utf-8"))["weight_map"]
        shards = set(weight_map.values())
    except (OSError, ValueError, RecursionError, KeyError, TypeError, AttributeError) as exc:
        raise ModelUnavailable(
            f"{index_name} in {folder} is not a weights index ({type(exc).__name__}: {exc}); download it again"
        ) from exc
    absent = sorted(str(shard) for shard in shards if not (folder / str(shard)).is_file())
    if absent:
        raise ModelUnavailable(
            f"{folder} lacks {len(absent)} of the {len(shards)} weight shards its {index_name} names (first: "
            f"{absent[0]}); download them again"
        )


def check_heads_fit(model: str, heads: Sequence[tuple[int, int]], folder: str | Path | None = None) -> None:
    """`ModelUnavailable` when `heads_misfit` finds a head that is not one of `model`'s."""
    problem = heads_misfit(model, heads, folder)
    if problem is not None:
        raise ModelUnavailable(problem)


def heads_misfit(model: str, heads: Sequence[tuple[int, int]], folder: str | Path | None = None) -> str | None:
    """Why some of `heads` are not heads of `model` (a layer past its text layers, a head past its heads per
    layer), read from its config before any weight loads; None when they fit. `folder`: where `model` lies
    (default: the local folder, or this machine's copy of a hub model; a hub model not here is not checked).
    A negative head, or a config that cannot be read, raises `ModelUnavailable`."""
    _check_non_negative(model, heads)
    if folder is None:
        repo_id = hub_id_of(model)
        if repo_id is None:
            folder = model
        else:
            cached = hub.find_cached(repo_id, max(layer for layer, _ in heads))
            if cached is None:
                return None
            folder = cached.path
    from annotator.grounding.heads import head_label
    from annotator.lvlm.checkpoint import text_layout

    num_layers, num_heads = text_layout(str(folder))
    problems = []
    for outside, index, has, unit in (
        ([h for h in heads if h[0] >= num_layers], 0, num_layers, "text layers"),
        ([h for h in heads if h[1] >= num_heads], 1, num_heads, "heads per layer"),
    ):
        if outside:
            needs = "needs" if len(outside) == 1 else "need"
            wanted = max(h[index] for h in outside) + 1
            problems.append(f"{', '.join(head_label(h) for h in outside)} {needs} {wanted} {unit}; {model} has {has}")
    if not problems:
        return None
    return (
        f"the heads {list(heads)} do not fit {model}: {'; '.join(problems)} (find its own heads with "
        f"'annotator find-heads --model {model} --data FILE')"
    )


def _check_non_negative(model: str, heads: Sequence[tuple[int, int]]) -> None:
    from annotator.grounding.heads import head_label

    negative = [head_label(h) for h in heads if min(h) < 0]
    if negative:
        raise ModelUnavailable(f"{', '.join(negative)} is not a head of {model}: layers and heads count from 0")


def load_grounder(
    model: str,
    heads: Sequence[tuple[int, int]],
    *,
    device: "str | torch.device | None" = None,
    dtype: "torch.dtype | None" = None,
    load_in_4bit: bool = False,
    prefix_cache_size: int = 8,
    fetch: bool = False,
    progress: "Progress | None" = None,
    min_pixels: int | None = None,
    max_pixels: int | None = None,
    max_image_tokens: int | None = None,
) -> "Grounder":
    """The model truncated after the deepest of `heads` (0-based (layer, head)) and its grounder. `ModelUnavailable`
    when the model is not here (see `model_folder`) or the heads do not fit it (found before the weights load).
    `min_pixels` / `max_pixels` / `max_image_tokens`: the native-resolution families' budget (None: the
    checkpoint's)."""
    from annotator.grounding.grounder import Grounder
    from annotator.lvlm.engine import LvlmEngine

    heads = [(int(layer), int(head)) for layer, head in heads]
    if not heads:
        raise ModelUnavailable(f"no localization heads were given for {model}")
    _check_non_negative(model, heads)
    deepest = max(layer for layer, _ in heads)
    folder = model_folder(model, deepest, fetch=fetch, progress=progress)
    check_heads_fit(model, heads, folder)
    engine = LvlmEngine.load(
        folder,
        device=device,
        dtype=dtype,
        truncate_after_layer=deepest,
        load_in_4bit=load_in_4bit,
        prefix_cache_size=prefix_cache_size,
        model_id=hub_id_of(model) or model,
        min_pixels=min_pixels,
        max_pixels=max_pixels,
        max_image_tokens=max_image_tokens,
    )
    try:
        return Grounder(engine, heads)
    except ValueError as exc:
        raise ModelUnavailable(f"the heads {heads} do not fit {model}: {exc}") from exc
