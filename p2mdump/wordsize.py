"""Deciding a tree's word size from pointer plausibility scores.

Both the walker (numpy scores over the top and mid pages) and the single
lookup (pure-Python score of the top page) measure, for each word size, the
fraction of pointer slots that name a frame in the image; this module turns
those scores into a choice or a clear error, so both decide alike.  Light on
purpose: the lookup fast path imports it.
"""
from __future__ import annotations

from .errors import LayoutError, TreeError

#: a given word size is questioned below this score ...
DOUBT = 0.75
#: ... and refused when it scores at most this while the other scores at least SURE
WRONG = 0.6
SURE = 0.99


def choose(scores: dict, top_mfn: int) -> int:
    """The word size with the better score (8 on a tie); TreeError if neither
    reads as pointers into the image."""
    best = max(scores, key=lambda ws: (scores[ws], ws))
    if scores[best] == 0.0:
        raise TreeError(
            f"the page at top MFN {top_mfn:#x} holds no pointer to a frame in the image "
            "at either word size: not a p2m top page (wrong --top-mfn or --base?)")
    return best


def check_given(ws: int, score_of, top_mfn: int) -> None:
    """Refuse a given word size the pages clearly contradict.  ``score_of``
    computes the score of a word size (called for the other one only when
    the given one is in doubt)."""
    mine = score_of(ws)
    if mine >= DOUBT:
        return
    other = 12 - ws
    theirs = score_of(other)
    if theirs >= SURE and mine <= WRONG:
        raise LayoutError(
            f"--word-size {ws} does not fit this tree: its pointer pages read as "
            f"{other}-byte words (pointer plausibility {theirs:.0%} vs {mine:.0%}); "
            f"use --word-size {other} or auto")
    if mine == 0.0:
        raise TreeError(
            f"the page at top MFN {top_mfn:#x} holds no pointer to a frame in the image as "
            f"{ws}-byte words: not a p2m top page (wrong --top-mfn or --base?)")
