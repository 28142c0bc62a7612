"""Record: the base of the plain value classes on the start-up path.

A command that must start fast (``walk``, ``lookup``) cannot afford
dataclasses: importing the module costs about a millisecond and building
each class about half a millisecond more (the generated methods are compiled
at import).  A record lists its fields in ``__slots__`` and sets them in its
``__init__``; like a dataclass it is equal to another of its class when all
its fields are, prints as ``Name(field=value, ...)`` and is not hashable.
"""
from __future__ import annotations


class Record:
    """Plain value object: equality, repr and :meth:`replace` over ``__slots__``."""

    __slots__: tuple[str, ...] = ()

    def __eq__(self, other: object):
        if type(other) is not type(self):
            return NotImplemented
        return all(getattr(self, n) == getattr(other, n) for n in self.__slots__)

    # None makes the class unhashable (typeshed types object.__hash__ as a method only)
    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        fields = ", ".join(f"{n}={getattr(self, n)!r}" for n in self.__slots__)
        return f"{type(self).__name__}({fields})"

    def replace(self, **changes):
        """A copy with the fields in ``changes`` replaced (``dataclasses.replace``)."""
        unknown = set(changes) - set(self.__slots__)
        if unknown:
            raise TypeError(f"{type(self).__name__} has no field(s) {sorted(unknown)}")
        new = object.__new__(type(self))
        for n in self.__slots__:
            object.__setattr__(new, n, changes[n] if n in changes else getattr(self, n))
        return new
