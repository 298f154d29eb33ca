"""Text side of the detector: prompt -> class list -> Grounding DINO captions with per-token class ids.

A prompt ``"Cat. traffic light, DOG."`` becomes the class list ``["cat", "traffic light", "dog"]``.
Each class is one phrase of the caption the model reads, ``"cat . traffic light . dog ."``; after
tokenisation (``[CLS] cat . traffic light . dog . [SEP]``) every token knows which class phrase it
belongs to (-1 for ``[CLS]``, ``.`` and ``[SEP]``), so a query's score for a class is the max over that
phrase's tokens. When the caption would exceed the model's text limit (``max_text_len``, 256 tokens in
the released models) the class list is split into chunks that each fit, never splitting a phrase.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

__all__ = ["TokenizedCaption", "build_caption", "parse_prompt", "tokenize_classes"]

# ".", ",", ";" and line breaks separate classes; users type any ("cat. dog", "cat, dog", one per line).
_SEPARATORS = re.compile(r"[.,;\r\n]")
_WHITESPACE = re.compile(r"\s+")
# Tokens added around the caption: [CLS] ... [SEP].
_N_SPECIAL = 2


def parse_prompt(prompt: str | Sequence[str]) -> list[str]:
    """Normalise a prompt into an ordered list of unique class names.

    Args:
        prompt: ``"cat. dog"``, ``"Cat, DOG."``, ``"cat . dog ."`` or a sequence of names
            (``["cat", "Dog."]``); items of a sequence may themselves hold several ``.``/``,``
            separated names.

    Returns:
        Class names: NFC-normalised, trimmed, lowercased, inner whitespace collapsed to one space,
        duplicates removed keeping the first occurrence. ``["cat", "dog"]`` for every example above.
        Pieces with no letter or digit (``"?!"``, ``"-"``) name no class and are left out.

    Raises:
        ValueError: the prompt holds no class name, or a sequence item is not a ``str``.
    """
    if isinstance(prompt, str):
        pieces = [prompt]
    elif isinstance(prompt, Sequence):
        bad = [type(item).__name__ for item in prompt if not isinstance(item, str)]
        if bad:
            raise ValueError(f"prompt items must be str; got {', '.join(sorted(set(bad)))}")
        pieces = list(prompt)
    else:
        raise ValueError(f"prompt must be a str or a sequence of str, got {type(prompt).__name__}")

    classes: list[str] = []
    for piece in pieces:
        for name in _SEPARATORS.split(unicodedata.normalize("NFC", piece)):
            name = _WHITESPACE.sub(" ", name).strip().lower()
            if name and name not in classes and any(ch.isalnum() for ch in name):
                classes.append(name)
    if not classes and any(not ch.isspace() and ch not in ".,;" for piece in pieces for ch in piece):
        raise ValueError(
            f"prompt {_shorten(prompt)!r} has no letters or digits, so it names no class; give class names "
            "separated by '.', ',' or new lines, e.g. 'cat. dog'"
        )
    if not classes:
        raise ValueError(
            f"prompt is empty: {prompt!r} names no class; give class names separated by '.', ',', ';' or "
            "new lines, e.g. 'cat. dog'"
        )
    return classes


def _shorten(prompt: str | Sequence[str], limit: int = 60) -> str:
    text = prompt if isinstance(prompt, str) else " | ".join(prompt)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def build_caption(classes: Sequence[str]) -> str:
    """The caption Grounding DINO reads: every class phrase followed by ``" ."`` (``"cat . dog ."``)."""
    return " ".join(f"{name} ." for name in classes)


@dataclass(frozen=True)
class TokenizedCaption:
    """One model pass worth of text: a caption over a contiguous run of the user's classes.

    Attributes:
        class_indexes: C_chunk int64, positions of this caption's classes in the user's class list.
        input_ids: 1 x T int64 token ids (``[CLS]`` first, ``[SEP]`` last), T <= the text limit.
        attention_mask: 1 x T int64, all ones (one caption, no padding).
        token_type_ids: 1 x T int64, all zeros.
        token_class: T int64; for each token, the index *into class_indexes* of the phrase it belongs
            to, or -1 for ``[CLS]``, ``.`` and ``[SEP]``.
    """

    class_indexes: np.ndarray
    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    token_type_ids: torch.Tensor
    token_class: np.ndarray

    @property
    def num_tokens(self) -> int:
        return int(self.input_ids.shape[1])


def tokenize_classes(tokenizer: Any, classes: Sequence[str], *, max_tokens: int) -> list[TokenizedCaption]:
    """Tokenise ``classes`` into as few captions as fit ``max_tokens`` each, in class order.

    Args:
        tokenizer: a fast (``tokenizers``-backed) BERT tokenizer, as ``AutoTokenizer`` returns.
        classes: class names, normally from :func:`parse_prompt`.
        max_tokens: the model's text limit (``config.max_text_len``), counting ``[CLS]`` and ``[SEP]``.

    Returns:
        One :class:`TokenizedCaption` per chunk; every class appears in exactly one chunk, phrases are
        never split, and the chunks' ``class_indexes`` concatenate to ``0..len(classes)-1``.

    Raises:
        ValueError: no classes, or one phrase alone (with its ``" ."`` and the two special tokens)
            exceeds ``max_tokens``, or a phrase produces no token at all.
    """
    if len(classes) == 0:
        raise ValueError("no classes to detect; parse the prompt with parse_prompt() first")
    # Token count of each phrase alone; BERT splits on whitespace and punctuation first, so a
    # caption's length is 2 + sum(phrase tokens + 1 for its ".").
    lengths = [len(ids) for ids in tokenizer(list(classes), add_special_tokens=False)["input_ids"]]
    for name, n in zip(classes, lengths, strict=True):
        if n == 0:
            raise ValueError(f"class {name!r} produces no tokens; use a name made of letters or digits")
        if _N_SPECIAL + n + 1 > max_tokens:
            raise ValueError(
                f"class {name!r} is {n} tokens long; one phrase may use at most "
                f"{max_tokens - _N_SPECIAL - 1} tokens (the detector's text limit is {max_tokens}); "
                "shorten it"
            )

    chunks: list[list[int]] = [[]]
    used = _N_SPECIAL
    for index, n in enumerate(lengths):
        if used + n + 1 > max_tokens:
            chunks.append([])
            used = _N_SPECIAL
        chunks[-1].append(index)
        used += n + 1
    return [_tokenize_chunk(tokenizer, classes, chunk, max_tokens=max_tokens) for chunk in chunks]


def _tokenize_chunk(
    tokenizer: Any, classes: Sequence[str], chunk: list[int], *, max_tokens: int
) -> TokenizedCaption:
    names = [classes[i] for i in chunk]
    caption = build_caption(names)
    # Character span of each phrase inside the caption ("name ." pieces joined by one space).
    starts = np.cumsum([0] + [len(name) + 3 for name in names[:-1]])  # C_chunk
    ends = starts + np.array([len(name) for name in names])  # C_chunk
    encoded = tokenizer(
        [caption], return_offsets_mapping=True, return_token_type_ids=True, return_tensors="pt"
    )
    offsets = encoded["offset_mapping"][0].numpy()  # T x 2 char offsets; (0, 0) for special tokens
    num_tokens = offsets.shape[0]
    if num_tokens > max_tokens:
        raise RuntimeError(
            f"caption of {len(names)} classes tokenised to {num_tokens} tokens, above the limit "
            f"{max_tokens} the per-phrase counts predicted; the tokenizer is not BERT-like"
        )
    phrase = np.searchsorted(starts, offsets[:, 0], side="right") - 1  # T, candidate phrase per token
    inside = (offsets[:, 1] > offsets[:, 0]) & (phrase >= 0)
    inside &= offsets[:, 0] < ends[np.clip(phrase, 0, None)]
    token_class = np.where(inside, phrase, -1).astype(np.int64)  # T
    return TokenizedCaption(
        class_indexes=np.asarray(chunk, dtype=np.int64),
        input_ids=encoded["input_ids"].long(),
        attention_mask=encoded["attention_mask"].long(),
        token_type_ids=encoded["token_type_ids"].long(),
        token_class=token_class,
    )
