"""The real Qwen2-VL tokenizer and processor, offline: the committed vocabulary (tests/data/README.md) with the
special tokens, chat template and image processor of the released Qwen2-VL-Instruct checkpoints."""

from __future__ import annotations

import functools
import json
import lzma
import tempfile
from pathlib import Path

TOKENIZER_XZ = Path(__file__).parent / "data" / "qwen2_vl_tokenizer.json.xz"
# Qwen2-VL-Instruct's preprocessor_config.json (transformers' own defaults keep max_pixels at 28 * 28 * 1280)
MIN_PIXELS = 56 * 56
MAX_PIXELS = 28 * 28 * 16384
# Qwen2-VL-Instruct's chat template, as its chat_template.json writes it
CHAT_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}{% set video_count = namespace(value=0) %}"
    "{% for message in messages %}{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}<|im_end|>\n"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
    "{% set image_count.value = image_count.value + 1 %}"
    "{% if add_vision_id %}Picture {{ image_count.value }}: {% endif %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'video' or 'video' in content %}{% set video_count.value = video_count.value + 1 %}"
    "{% if add_vision_id %}Video {{ video_count.value }}: {% endif %}<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}{% endfor %}<|im_end|>\n"
    "{% endif %}{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
ADDITIONAL_SPECIAL_TOKENS = [
    "<|im_start|>",
    "<|im_end|>",
    "<|object_ref_start|>",
    "<|object_ref_end|>",
    "<|box_start|>",
    "<|box_end|>",
    "<|quad_start|>",
    "<|quad_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
]
# Qwen2-VL-Instruct's tokenizer_config.json, less its chat template and added-token table (tokenizer.json has both)
TOKENIZER_CONFIG = {
    "tokenizer_class": "Qwen2Tokenizer",
    "add_prefix_space": False,
    "additional_special_tokens": ADDITIONAL_SPECIAL_TOKENS,
    "bos_token": None,
    "eos_token": "<|im_end|>",
    "pad_token": "<|endoftext|>",
    "unk_token": None,
    "clean_up_tokenization_spaces": False,
    "errors": "replace",
    "model_max_length": 32768,
    "split_special_tokens": False,
}


@functools.lru_cache(maxsize=1)
def _tokenizer_folder() -> tempfile.TemporaryDirectory:
    """A folder holding tokenizer.json (decompressed once per process) and tokenizer_config.json; removed at exit."""
    folder = tempfile.TemporaryDirectory(prefix="qwen2_vl_tokenizer_")
    (Path(folder.name) / "tokenizer.json").write_bytes(lzma.decompress(TOKENIZER_XZ.read_bytes()))
    (Path(folder.name) / "tokenizer_config.json").write_text(json.dumps(TOKENIZER_CONFIG), encoding="utf-8")
    return folder


def real_qwen_tokenizer():
    """Qwen2-VL-Instruct's tokenizer (`Qwen2Tokenizer`), loaded as `from_pretrained` loads the checkpoint's."""
    from transformers import Qwen2Tokenizer

    return Qwen2Tokenizer.from_pretrained(_tokenizer_folder().name)


def real_qwen_processor(min_pixels: int | None = None, max_pixels: int | None = None):
    """Qwen2-VL-Instruct's `Qwen2VLProcessor`; `min_pixels` / `max_pixels` default to the checkpoint's."""
    from transformers import Qwen2VLImageProcessor, Qwen2VLProcessor, Qwen2VLVideoProcessor

    image_processor = Qwen2VLImageProcessor(
        min_pixels=MIN_PIXELS if min_pixels is None else min_pixels,
        max_pixels=MAX_PIXELS if max_pixels is None else max_pixels,
    )
    return Qwen2VLProcessor(
        image_processor=image_processor,
        tokenizer=real_qwen_tokenizer(),
        video_processor=Qwen2VLVideoProcessor(),
        chat_template=CHAT_TEMPLATE,
    )
