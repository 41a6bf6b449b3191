"""A tiny Qwen2-style byte-level BPE tokenizer, written to disk by the tests (no downloads).

The files have the same shape as the Eagle tokenizer that ships in Isaac-GR00T's ``eagle2_hg_model/``:
``vocab.json`` + ``merges.txt`` (byte-level BPE; no ``tokenizer.json``, so transformers builds the fast tokenizer
from them with its Qwen2 converter, exactly as for the real files) and a ``tokenizer_config.json`` whose added
tokens keep the real relative order (``<|endoftext|>`` first, ``<IMG_CONTEXT>`` 26 later, ...). Only the base
vocabulary is tiny: 256 byte symbols plus the merges for a few words, so the ids of the added tokens are
``TINY_BASE_VOCAB + (real_id - 151643)`` instead of the real 151643... .
"""

from __future__ import annotations

import json
import pathlib

# Real id of the first added token (<|endoftext|>) in the Qwen3 / Eagle tokenizer.
REAL_FIRST_ADDED_ID = 151643

# Added tokens in id order, starting at 151643 in the real tokenizer; (content, special).
ADDED_TOKENS: tuple[tuple[str, bool], ...] = (
    ("<|endoftext|>", True), ("<|im_start|>", True), ("<|im_end|>", True),
    ("<|object_ref_start|>", True), ("<|object_ref_end|>", True), ("<|box_start|>", True), ("<|box_end|>", True),
    ("<|quad_start|>", True), ("<|quad_end|>", True), ("<|vision_start|>", True), ("<|vision_end|>", True),
    ("<|vision_pad|>", True), ("<|image_pad|>", True), ("<|video_pad|>", True),
    ("<tool_call>", False), ("</tool_call>", False), ("<|fim_prefix|>", False), ("<|fim_middle|>", False),
    ("<|fim_suffix|>", False), ("<|fim_pad|>", False), ("<|repo_name|>", False), ("<|file_sep|>", False),
    ("<tool_response>", False), ("</tool_response>", False), ("<think>", False), ("</think>", False),
    ("<IMG_CONTEXT>", True), ("<img>", True), ("</img>", True),
    ("<box>", True), ("</box>", True), ("<quad>", True), ("</quad>", True), ("<ref>", True), ("</ref>", True),
    ("<interval>", True), ("</interval>", True),
)

# Words that become single tokens (byte-level: "Ġ" is a leading space). Enough to make the chat-template text
# and the test instructions exercise real merges, and to make "<image 1>" split into several tokens.
_MERGED_WORDS = (
    "system", "user", "assistant", "You", "Ġare", "Ġa", "Ġhelpful", "Ġassistant", "image", "Ġthe", "pick",
    "Ġup", "Ġblack", "Ġbowl", "Ġcube", "Ġcubes", "Ġon", "Ġtop", "Stack", "Ġstack", "Ġred", "Ġblue", "Ġgreen",
)


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte -> printable-unicode map that byte-level BPE vocabularies are written in."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    printable += list(range(ord("®"), ord("ÿ") + 1))
    mapping = {b: chr(b) for b in printable}
    extra = 0
    for b in range(256):
        if b not in mapping:
            mapping[b] = chr(256 + extra)
            extra += 1
    return mapping


def _vocab_and_merges() -> tuple[dict[str, int], list[tuple[str, str]]]:
    byte_symbols = _bytes_to_unicode()
    vocab = {byte_symbols[b]: b for b in range(256)}
    merges: list[tuple[str, str]] = []
    for word in _MERGED_WORDS:
        # Merge left to right: ("s","y") -> "sy", ("sy","s") -> "sys", ...
        left = word[0]
        for ch in word[1:]:
            merged = left + ch
            if merged not in vocab:
                merges.append((left, ch))
                vocab[merged] = len(vocab)
            left = merged
    return vocab, merges


_VOCAB, _MERGES = _vocab_and_merges()
TINY_BASE_VOCAB = len(_VOCAB)
TINY_VOCAB_SIZE = TINY_BASE_VOCAB + len(ADDED_TOKENS)


def tiny_token_id(token: str) -> int:
    """Id of an added token in the tiny tokenizer."""
    contents = [content for content, _ in ADDED_TOKENS]
    return TINY_BASE_VOCAB + contents.index(token)


def write_tiny_qwen_tokenizer(directory: str | pathlib.Path) -> pathlib.Path:
    """Writes vocab.json, merges.txt, tokenizer_config.json and special_tokens_map.json into ``directory``."""
    directory = pathlib.Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "vocab.json").write_text(json.dumps(_VOCAB, ensure_ascii=False), encoding="utf-8")
    merges_text = "#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in _MERGES)
    (directory / "merges.txt").write_text(merges_text, encoding="utf-8")
    added = {
        str(TINY_BASE_VOCAB + i): {
            "content": content, "lstrip": False, "normalized": False, "rstrip": False, "single_word": False,
            "special": special,
        }
        for i, (content, special) in enumerate(ADDED_TOKENS)
    }
    additional_special = [content for content, special in ADDED_TOKENS[1:] if special]
    config = {
        "tokenizer_class": "Qwen2Tokenizer",
        "add_bos_token": False,
        "add_eos_token": False,
        "add_prefix_space": False,
        "added_tokens_decoder": added,
        "additional_special_tokens": additional_special,
        "bos_token": None,
        "clean_up_tokenization_spaces": False,
        "eos_token": "<|im_end|>",
        "errors": "replace",
        "model_max_length": 16384,
        "pad_token": "<|endoftext|>",
        "split_special_tokens": False,
        "unk_token": None,
    }
    (directory / "tokenizer_config.json").write_text(json.dumps(config, indent=1), encoding="utf-8")
    special_map = {"additional_special_tokens": additional_special, "eos_token": "<|im_end|>",
                   "pad_token": "<|endoftext|>"}
    (directory / "special_tokens_map.json").write_text(json.dumps(special_map, indent=1), encoding="utf-8")
    return directory
