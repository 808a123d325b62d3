"""Reading a checkpoint of a supported family (`families`) for the grounding engine: its config and processor, the
model class to build (whole, or truncated after a layer), 4-bit settings, and the weights, with every way a
checkpoint can be missing, damaged or mismatched turned into one `ModelUnavailable` line that says which file and
what to do.

transformers, safetensors and torch are imported inside functions only (see `lvlm`): `text_layout` is asked
before any model loads.
"""

from __future__ import annotations

import logging
import pickle
import re
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

from annotator.errors import ModelUnavailable
from annotator.lvlm.families import family_info, unsupported_reason

if TYPE_CHECKING:
    import torch


def load_config(name: str):
    """The checkpoint's config (config.json only, no weights), or `ModelUnavailable` saying what is wrong."""
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(name)
    except (OSError, ValueError) as exc:
        raise ModelUnavailable(_unavailable_message(name, exc)) from exc
    if family_info(config.model_type) is None:
        raise ModelUnavailable(f"{name}: {unsupported_reason(config.model_type)}")
    return config


def text_layout(name: str) -> tuple[int, int]:
    """(text layers, attention heads per layer) of a checkpoint, read from its config."""
    text = load_config(name).text_config
    return int(text.num_hidden_layers), int(text.num_attention_heads)


def load_config_and_processor(name: str):
    """The checkpoint's config and processor, or `ModelUnavailable` saying what is missing and where."""
    from transformers import AutoProcessor

    config = load_config(name)
    try:
        processor = AutoProcessor.from_pretrained(name)
    except (OSError, ValueError) as exc:
        raise ModelUnavailable(_unavailable_message(name, exc)) from exc
    return config, processor


def load_weights(model_class: type, name: str, **kwargs: Any) -> Any:
    """`model_class.from_pretrained(name, **kwargs)`; a damaged or incomplete weights file, weights of other shapes
    than config.json and a checkpoint that is missing or cannot be read raise `ModelUnavailable` saying which and
    what to do. Running out of memory, and other failures of a safetensors checkpoint, raise as they are."""
    import torch
    from safetensors import SafetensorError

    try:
        with _load_report_held_back() as report:
            return model_class.from_pretrained(name, **kwargs)
    except (SafetensorError, pickle.UnpicklingError, EOFError) as exc:
        raise ModelUnavailable(_damaged_weights_message(name, exc)) from exc
    except RuntimeError as exc:
        if "ignore_mismatched_sizes" in str(exc) or "size mismatch" in str(exc):
            raise ModelUnavailable(_mismatch_message(name, report)) from exc
        if isinstance(exc, torch.OutOfMemoryError) or not _pickled_weights(name):
            raise
        raise ModelUnavailable(_damaged_weights_message(name, exc)) from exc
    except (OSError, ValueError) as exc:
        raise ModelUnavailable(_unavailable_message(name, exc)) from exc
    except Exception as exc:  # the unpickler of a damaged .bin fails with any error type (IndexError, KeyError...)
        if not _pickled_weights(name):
            raise
        raise ModelUnavailable(_damaged_weights_message(name, exc)) from exc


@contextmanager
def _load_report_held_back() -> Iterator[list[logging.LogRecord]]:
    """Hold back the load report transformers logs during `from_pretrained` (a table of every odd tensor): it is
    logged as usual when the load succeeds; when the load fails, the one-line error says what it found."""
    logger = logging.getLogger("transformers.modeling_utils")
    held: list[logging.LogRecord] = []

    def hold(record: logging.LogRecord) -> bool:
        if "LOAD REPORT" in record.getMessage():
            held.append(record)
            return False
        return True

    logger.addFilter(hold)
    try:
        yield held
    finally:
        logger.removeFilter(hold)
    for record in held:
        logger.handle(record)


def _mismatch_message(name: str, report: list[logging.LogRecord]) -> str:
    text = re.sub(r"\x1b\[[0-9;]*m", "", "\n".join(record.getMessage() for record in report))
    rows = [line for line in text.splitlines() if "MISMATCH" in line and "ckpt:" in line]
    example = ""
    if rows:
        tensor = rows[0].split("|")[0].strip()
        shapes = re.search(r"ckpt: torch.Size\((\[[^]]*\])\) vs model: ?torch.Size\((\[[^]]*\])\)", rows[0])
        example = f" (e.g. {tensor}: {shapes[1]} in the file, {shapes[2]} by config.json)" if shapes else ""
    return (
        f"the weights in {name} do not fit its config.json: {len(rows) or 'some'} tensor(s) have other shapes"
        f"{example}; the folder mixes the files of two models, save or download the model again"
    )


def _pickled_weights(name: str) -> bool:
    """Whether the folder `name` keeps its weights in pickled .bin files only (no safetensors)."""
    folder = Path(name).expanduser()
    return folder.is_dir() and not any(folder.glob("*.safetensors")) and any(folder.glob("*.bin"))


def _damaged_weights_message(name: str, exc: Exception) -> str:
    """Which weights file of `name` is damaged (a safetensors header is read without loading a tensor) and what
    to do."""
    from safetensors import SafetensorError, safe_open

    reason = " ".join(str(exc).split())
    folder = Path(name).expanduser()
    if not folder.is_dir():
        return f"a weights file of {name} is damaged or incomplete ({reason}); download it again"
    for weights in sorted(folder.glob("*.safetensors")):
        try:
            with safe_open(str(weights), framework="pt"):
                pass
        except (SafetensorError, OSError) as damaged:
            reason = " ".join(str(damaged).split())
            return f"the weights file {weights.name} in {folder} is damaged or incomplete ({reason}); download it again"
    pickled = sorted(path.name for path in folder.glob("*.bin"))
    which = f"the weights file {pickled[0]}" if len(pickled) == 1 else "a weights file"
    unpickler = re.search(r"WeightsUnpickler error:\s*(.+?)\s*(\n\n|$)", str(exc), re.S)
    reason = " ".join(unpickler.group(1).split()) if unpickler else f"{type(exc).__name__}: {reason}"[:300]
    return f"{which} in {folder} is damaged or incomplete ({reason}); download it again"


def _unavailable_message(name: str, exc: Exception) -> str:
    from huggingface_hub import constants

    reason = " ".join(str(exc).split())
    path = Path(name).expanduser()
    if path.exists():
        return f"cannot load the checkpoint in folder {name}: {reason}"
    if path.is_absolute() or name.startswith((".", "~")) or name.count("/") > 1 or "\\" in name:
        return f"no model folder at {name} (and it is not a hub id of the form 'namespace/name')"
    return (
        f"cannot load model {name!r}: {reason} It is not in the Hugging Face cache ({constants.HF_HUB_CACHE}) or "
        f"cannot be read from it. Download it while online with `hf download {name}` (a preset: `annotator "
        f"models download NAME`, only the files grounding needs), or pass a local folder "
        f"saved with save_pretrained."
    )


def grounding_model_class(config, truncate_after_layer: int | None = None, name: str = "the model"):
    """The model class to build for grounding, and its config: the family's class (`LlavaForConditionalGeneration`,
    `Qwen2VLForConditionalGeneration`...) as is, or for a truncated model a subclass without the LM head whose
    config builds text layers 0..`truncate_after_layer` only (a checkpoint's weights for the rest are skipped when
    loading). Changes `config` in place."""
    import transformers

    info = family_info(config.model_type)
    if info is None:
        raise ModelUnavailable(f"{name}: {unsupported_reason(config.model_type)}")
    base = getattr(transformers, info.model_class)
    if truncate_after_layer is None:
        return base, config
    total = int(config.text_config.num_hidden_layers)
    if not 0 <= truncate_after_layer < total:
        raise ValueError(f"truncate_after_layer={truncate_after_layer}, but {name} has {total} text layers")
    config.text_config.num_hidden_layers = truncate_after_layer + 1
    if getattr(config.text_config, "layer_types", None) is not None:
        config.text_config.layer_types = config.text_config.layer_types[: truncate_after_layer + 1]
    dropped = "|".join(str(i) for i in range(truncate_after_layer + 1, total))
    skipped = [r"(^|\.)lm_head\."] + ([info.layer_keys.format(layers=dropped)] if dropped else [])

    class Truncated(base):
        """The family's model without the LM head and the text layers above `truncate_after_layer`."""

        _tied_weights_keys: dict = {}
        _keys_to_ignore_on_load_unexpected = skipped

        def __init__(self, config) -> None:
            super().__init__(config)
            del self.lm_head

        def get_output_embeddings(self) -> None:
            return None

    Truncated.__name__ = Truncated.__qualname__ = f"Truncated{base.__name__}"
    _share_weight_renamings(base, Truncated)
    return Truncated, config


def _share_weight_renamings(base: type, truncated: type) -> None:
    """transformers looks a checkpoint's key renamings up by class name (Qwen-VL's hub layout, `model.layers.N`,
    is renamed only so): give the truncated subclass its base's, or no text weight of such a checkpoint loads."""
    from transformers.conversion_mapping import (
        get_checkpoint_conversion_mapping,
        register_checkpoint_conversion_mapping,
    )

    mapping = get_checkpoint_conversion_mapping(base.__name__)
    if mapping is not None:
        register_checkpoint_conversion_mapping(truncated.__name__, mapping, overwrite=True)


def four_bit_config(name: str, device: torch.device, dtype: torch.dtype, model_type: str = "llava"):
    """bitsandbytes' 4-bit (NF4) settings for the text layers of a `model_type` checkpoint (its vision side and LM
    head stay in `dtype`), or `ModelUnavailable` saying what is missing."""
    import importlib.util

    from transformers import BitsAndBytesConfig

    if device.type != "cuda":
        raise ModelUnavailable(f"4-bit loading of {name} needs a CUDA GPU; this run is on {device}")
    if importlib.util.find_spec("bitsandbytes") is None:
        raise ModelUnavailable(f"4-bit loading of {name} needs bitsandbytes: pip install bitsandbytes")
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_compute_dtype=dtype,
        bnb_4bit_quant_type="nf4",
        llm_int8_skip_modules=list(family_info(model_type).full_precision_modules),
    )
