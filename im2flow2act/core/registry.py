"""Pick components by name: a config dataclass registered under a name, and one factory.

The LeRobot pattern (docs/design.md §6): ``@TRACKERS.register("lk", LKConfig)`` on a class whose constructor
takes that config; ``TRACKERS.build("lk", {"win_size": 31})`` validates the options against the
config dataclass (unknown keys fail with the valid ones listed) and builds the component. Tests
iterate over ``registry.names()`` so every registered component gets exercised.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from im2flow2act.core.config import from_dict

T = TypeVar("T")


class UnknownComponentError(KeyError):
    """A name that no component is registered under."""

    def __str__(self) -> str:  # KeyError quotes its message; we want it readable
        return str(self.args[0])


@dataclass(frozen=True)
class Entry(Generic[T]):
    name: str
    factory: Callable[[Any], T]
    config_cls: type


class Registry(Generic[T]):
    """A name → (factory, config dataclass) table for one kind of component."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, Entry[T]] = {}

    def register(self, name: str, config_cls: type) -> Callable[[Callable[[Any], T]], Callable[[Any], T]]:
        def decorator(factory: Callable[[Any], T]) -> Callable[[Any], T]:
            if name in self._entries:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._entries[name] = Entry(name, factory, config_cls)
            return factory

        return decorator

    def names(self) -> list[str]:
        return sorted(self._entries)

    def registered(self) -> list[str]:
        """The names in the order they were registered (``names()`` sorts them)."""
        return list(self._entries)

    def entry(self, name: str) -> Entry[T]:
        if name not in self._entries:
            close = difflib.get_close_matches(name, self.names(), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise UnknownComponentError(
                f"unknown {self.kind} {name!r}{hint}; registered: {', '.join(self.names()) or 'none'}"
            )
        return self._entries[name]

    def make_config(self, name: str, options: dict[str, Any] | None = None) -> Any:
        entry = self.entry(name)
        return from_dict(entry.config_cls, dict(options or {}), where=f"{self.kind} {name!r}")

    def build(self, name: str, options: dict[str, Any] | Any | None = None) -> T:
        """Build component ``name`` from an options mapping or a ready config instance."""
        entry = self.entry(name)
        cfg = options if isinstance(options, entry.config_cls) else self.make_config(name, options)
        return entry.factory(cfg)
