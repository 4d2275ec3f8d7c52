"""Name -> factory registries whose errors list the valid names."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from mess_ros.errors import MessError

T = TypeVar("T")


class Registry(Generic[T]):
    """Maps names to objects (usually classes or builder functions).

    ``kind`` names what is registered ("backbone", "exit head", "policy") so
    that a lookup failure reads as a sentence a user can act on.
    """

    def __init__(self, kind: str, error: type[MessError]) -> None:
        self.kind = kind
        self._error = error
        self._items: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        def decorator(item: T) -> T:
            if name in self._items:
                raise self._error(f"{self.kind} {name!r} is already registered")
            self._items[name] = item
            return item

        return decorator

    def get(self, name: str) -> T:
        try:
            return self._items[name]
        except KeyError as err:
            valid = ", ".join(sorted(self._items)) or "(none)"
            msg = f"unknown {self.kind} {name!r}; valid names: {valid}"
            raise self._error(msg) from err

    def names(self) -> list[str]:
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._items))
