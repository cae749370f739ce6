"""Prompt-lookup drafting (pure)."""

from dasd_local.decoding.draft import DraftLength, NgramIndex


def test_draft_continues_the_latest_match_of_the_longest_suffix():
    idx = NgramIndex([1, 2, 3, 4, 5, 9, 2, 3, 7, 8], n=3)
    idx.extend([2, 3])  # suffix (2, 3) last seen followed by 7, 8
    assert idx.draft(2) == [7, 8]
    idx.extend([4])  # (2, 3, 4) seen at the start: its continuation wins over shorter suffixes
    assert idx.draft(3) == [5, 9, 2]


def test_no_match_and_zero_length():
    idx = NgramIndex([1, 2, 3], n=2)
    idx.extend([42])
    assert idx.draft(4) == []
    assert NgramIndex([1, 2, 1], n=2).draft(0) == []


def test_suffix_never_matches_itself():
    idx = NgramIndex([5, 6], n=2)  # (5, 6) has no successor yet
    assert idx.draft(3) == []
    idx.extend([5])  # (5,) was followed by 6
    assert idx.draft(3) == [6, 5]


def test_draft_length_adapts():
    d = DraftLength(start=4, most=8)
    d.update(4, 4)
    assert d.value == 6
    d.update(6, 1)
    assert d.value == 3
    d.update(0, 0)
    assert d.value == 3
    for _ in range(5):
        d.update(d.value, d.value)
    assert d.value == 8
