"""Caption options: tag shuffling with kept leading tags, caption dropout, the trigger token."""
from __future__ import annotations

import random

import pytest
import torch

from trainer.data import apply_caption_dropout, apply_trigger, augment_caption, shuffle_tags
from trainer.errors import ConfigError

CAPTION = "wcfox, fox, meadow, watercolor, soft light, flowers"


def test_shuffle_keeps_leading_tags_and_every_tag():
    seen = set()
    for seed in range(30):
        out = shuffle_tags(CAPTION, keep=2, rng=random.Random(seed))
        tags = out.split(", ")
        assert tags[:2] == ["wcfox", "fox"] and sorted(tags) == sorted(CAPTION.split(", "))
        seen.add(out)
    assert len(seen) > 5  # it does shuffle


def test_shuffle_is_reproducible_with_either_rng():
    a = shuffle_tags(CAPTION, 1, random.Random(7))
    assert a == shuffle_tags(CAPTION, 1, random.Random(7))
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    assert shuffle_tags(CAPTION, 1, g1) == shuffle_tags(CAPTION, 1, g2)


def test_sentences_and_short_lists_are_left_alone():
    assert shuffle_tags("a watercolor painting of a fox", 0, random.Random(0)) == "a watercolor painting of a fox"
    assert shuffle_tags("wcfox, fox", 1, random.Random(0)) == "wcfox, fox"
    with pytest.raises(ConfigError, match="keep_tags"):
        shuffle_tags(CAPTION, -1, random.Random(0))


def test_caption_dropout_probability():
    rng = random.Random(0)
    assert all(apply_caption_dropout(CAPTION, 0.0, rng) == CAPTION for _ in range(100))
    assert all(apply_caption_dropout(CAPTION, 1.0, rng) == "" for _ in range(100))
    dropped = sum(apply_caption_dropout(CAPTION, 0.1, rng) == "" for _ in range(5000))
    assert 400 < dropped < 600
    g = torch.Generator().manual_seed(0)
    assert 150 < sum(apply_caption_dropout(CAPTION, 0.2, g) == "" for _ in range(1000)) < 250
    for bad in (-0.1, 1.5, "0.1"):
        with pytest.raises(ConfigError, match="caption_dropout"):
            apply_caption_dropout(CAPTION, bad, rng)


def test_augment_drops_before_shuffling():
    assert augment_caption(CAPTION, random.Random(0), dropout=1.0, shuffle=True) == ""
    out = augment_caption(CAPTION, random.Random(1), shuffle=True, keep_tags=1)
    assert out.startswith("wcfox, ") and sorted(out.split(", ")) == sorted(CAPTION.split(", "))


def test_trigger_replaces_or_removes_the_placeholder():
    assert apply_trigger("photo of <my_token>, outdoors", "wcfox", "<my_token>") == "photo of wcfox, outdoors"
    assert apply_trigger("<my_token>, fox in snow", "", "<my_token>") == "fox in snow"
    assert apply_trigger("no placeholder", "wcfox", "<my_token>") == "no placeholder"
