"""Name → object registries, in the spirit of lm-eval's ``register_model`` and timm's model registry.

Models, tasks and pruning methods are looked up by a short name everywhere (CLI, results rows,
leaderboards).  A registry is a plain ordered mapping with a decorator to fill it, plus one error type
whose message lists the valid names, so that the CLI can print it as is and exit 2.
"""

from __future__ import annotations

from typing import Generic, Iterator, TypeVar

T = TypeVar("T")


class HarnessError(Exception):
    """A user-facing error: the CLI prints its message on one line and exits with code 2."""


class UnknownNameError(HarnessError, KeyError):
    def __str__(self) -> str:  # KeyError would quote the message
        return self.args[0]


class Registry(Generic[T]):
    """An ordered ``name -> entry`` mapping; ``kind`` names the entries in error messages."""

    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, T] = {}

    def register(self, name: str, entry: T | None = None):
        """``registry.register("x", obj)``, or ``@registry.register("x")`` as a decorator."""

        def add(obj: T) -> T:
            if name in self._entries:
                raise ValueError(f"{self.kind} {name!r} is already registered")
            self._entries[name] = obj
            return obj

        return add(entry) if entry is not None else add

    def get(self, name: str) -> T:
        try:
            return self._entries[name]
        except KeyError:
            raise UnknownNameError(
                f"unknown {self.kind} {name!r}; valid {self.kind}s: {', '.join(self._entries)}"
            ) from None

    def names(self) -> list[str]:
        return list(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def items(self):
        return self._entries.items()
