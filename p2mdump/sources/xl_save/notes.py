"""The findings of one save file, at most a few per kind."""
from __future__ import annotations

from collections import Counter

from ... import findings as F

#: findings of one kind listed before the rest are only counted
PER_KIND = 20


class Notes:
    """Collects findings; past :data:`PER_KIND` of a kind, counts them."""

    def __init__(self):
        self.items: list = []
        self._counts: Counter = Counter()

    def add(self, kind: str, message: str, severity: str = F.WARNING, **kw) -> None:
        self._counts[kind] += 1
        if self._counts[kind] <= PER_KIND:
            self.items.append(F.Finding(kind, severity, message, **kw))

    def close(self) -> list:
        """The findings, with one summary per kind that overflowed."""
        for kind, n in self._counts.items():
            if n > PER_KIND:
                self.items.append(F.Finding(F.SAVE_TOO_MANY, F.WARNING,
                                            f"{n - PER_KIND} more {kind} findings not listed",
                                            count=n - PER_KIND))
        return self.items
