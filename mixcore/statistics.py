"""Statistics as frozen dataclasses: a renamed counter fails where it is read, not silently 0.

Every role reports counts (never sizes, times or addresses: statistics are metadata too). They
used to travel as ``dict[str, object]`` read with ``.get(key, 0)``, so a counter renamed on one
side read as zero on the other and every test built on it kept passing. Here a snapshot is a
frozen dataclass that derives from :class:`Statistics`:

- :meth:`Statistics.as_dict` gives the JSON form (``stats.json``, the metrics page, the local
  API), nested snapshots included, with the field names as keys;
- :meth:`Statistics.from_dict` reads that form back and refuses a missing or unknown key with
  :class:`StatisticsError`, naming it; :meth:`Statistics.from_document` takes the snapshot's
  fields out of a larger document (a node's ``stats.json`` also holds its shell's figures) and
  refuses a missing one;
- :class:`Tally` is the mutable counter a core keeps between snapshots: only the snapshot's own
  field names can be counted, so a typo is a ``KeyError`` at the increment, in the test that
  first reaches it.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Iterator, Mapping
from typing import Any, ClassVar, Generic, Self, TypeVar

from mixcore.errors import MixnetError

__all__ = ["Statistics", "StatisticsError", "Tally"]


class StatisticsError(MixnetError):
    """A statistics document that does not have the snapshot's fields (a renamed counter)."""


@dataclasses.dataclass(frozen=True, slots=True)
class Statistics:
    """Base of every statistics snapshot: subclasses are frozen dataclasses of counts."""

    #: Fields of a subclass that may be absent from a document (read as their default).
    OPTIONAL: ClassVar[frozenset[str]] = frozenset()

    def as_dict(self) -> dict[str, Any]:
        """The JSON form: field names as keys, nested snapshots as nested dicts."""
        return {f.name: _plain(getattr(self, f.name)) for f in dataclasses.fields(self)}

    @classmethod
    def from_dict(cls, document: Mapping[str, Any]) -> Self:
        """Read :meth:`as_dict`'s form back; a missing or unknown key is refused by name."""
        return cls._read(document, extra_allowed=False)

    @classmethod
    def from_document(cls, document: Mapping[str, Any]) -> Self:
        """This snapshot's fields out of a document that holds more; a missing one is refused."""
        return cls._read(document, extra_allowed=True)

    @classmethod
    def _read(cls, document: Mapping[str, Any], *, extra_allowed: bool) -> Self:
        if not isinstance(document, Mapping):
            raise StatisticsError(f"{cls.__name__}: expected an object, got "
                                  f"{type(document).__name__}")
        fields = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(document) - set(fields))
        if unknown and not extra_allowed:
            raise StatisticsError(f"{cls.__name__}: unknown counters {unknown}")
        missing = sorted(n for n in fields if n not in document and n not in cls.OPTIONAL)
        if missing:
            raise StatisticsError(f"{cls.__name__}: missing counters {missing}")
        hints = typing.get_type_hints(cls)
        values = {}
        for name in fields:
            if name in document:
                values[name] = _typed(cls.__name__, name, hints[name], document[name])
        return cls(**values)


def _plain(value: object) -> object:
    if isinstance(value, Statistics):
        return value.as_dict()
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    return value


def _typed(owner: str, name: str, hint: Any, value: object) -> object:
    """Check one value against its field's annotation (the shapes statistics use)."""
    origin = typing.get_origin(hint)
    if origin in (types.UnionType, typing.Union):
        for option in typing.get_args(hint):
            try:
                return _typed(owner, name, option, value)
            except StatisticsError:
                continue
        raise StatisticsError(f"{owner}.{name}: {value!r} is not {hint}")
    if hint is type(None):
        if value is None:
            return None
        raise StatisticsError(f"{owner}.{name}: expected null")
    if isinstance(hint, type) and issubclass(hint, Statistics):
        if not isinstance(value, Mapping):
            raise StatisticsError(f"{owner}.{name}: expected an object")
        return hint.from_dict(value)
    if origin is dict:
        _, value_hint = typing.get_args(hint)
        if not isinstance(value, Mapping):
            raise StatisticsError(f"{owner}.{name}: expected an object")
        return {str(k): _typed(owner, f"{name}[{k}]", value_hint, v) for k, v in value.items()}
    if hint is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        raise StatisticsError(f"{owner}.{name}: {value!r} is not a number")
    if hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise StatisticsError(f"{owner}.{name}: {value!r} is not an integer")
    if hint is str:
        if isinstance(value, str):
            return value
        raise StatisticsError(f"{owner}.{name}: {value!r} is not a string")
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise StatisticsError(f"{owner}.{name}: {value!r} is not a boolean")
    return value


S = TypeVar("S", bound=Statistics)


class Tally(Generic[S]):
    """Integer counters named by the fields of one snapshot class, all starting at 0.

    ``tally["packets_in"] += 1`` works only for an ``int`` field of the snapshot; the snapshot
    itself is built by the owner (``Snapshot(**tally.counts(), extra=...)``) so derived figures
    (sizes of queues, nested parts) stay the owner's business.
    """

    __slots__ = ("_counts", "_of")

    def __init__(self, of: type[S], *, only: frozenset[str] | None = None) -> None:
        hints = typing.get_type_hints(of)
        names = [f.name for f in dataclasses.fields(of) if hints[f.name] is int]
        if only is not None:
            unknown = only - set(names)
            if unknown:
                raise KeyError(f"{of.__name__} has no integer counters {sorted(unknown)}")
            names = [n for n in names if n in only]
        self._of = of
        self._counts = dict.fromkeys(names, 0)

    def __getitem__(self, name: str) -> int:
        return self._counts[name]

    def __setitem__(self, name: str, value: int) -> None:
        if name not in self._counts:
            raise KeyError(f"{self._of.__name__} has no counter {name!r}")
        self._counts[name] = value

    def __iter__(self) -> Iterator[str]:
        return iter(self._counts)

    def counts(self) -> dict[str, int]:
        """A copy of the counters, to pass into the snapshot's constructor."""
        return dict(self._counts)
