"""Name → object registries, in the spirit of lm-eval's ``register_model`` and timm's model registry,
open to other packages through entry points.

Models, tasks and pruning methods are looked up by a short name everywhere (CLI, results rows,
leaderboards).  A registry is an ordered mapping with a decorator to fill it, plus one error type
whose message lists the valid names, so that the CLI can print it as is and exit 2.

Plugins: a registry with a ``group`` also holds the entry points other distributions declare in that
group (``[project.entry-points."harness.methods"]`` in their pyproject.toml).  Entry points are found
on first use, by reading installed metadata only; an entry's module is imported when that entry is
asked for, so a broken or slow plugin costs nothing to a run that does not use it.  Every entry
remembers its source (``built in``, or the distribution that declared it): ``harness list`` shows it,
and a name declared twice is an error that names both sources instead of one silently winning.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from importlib import metadata
from typing import Any, Generic, TypeVar

T = TypeVar("T")

BUILT_IN = "built in"
GROUPS = ("harness.methods", "harness.models", "harness.tasks")
"""The entry-point groups a plugin distribution may declare entries in."""


class HarnessError(Exception):
    """A user-facing error: the CLI prints its message on one line and exits with code 2."""


def one_line(exc: BaseException) -> str:
    """A library exception as a fragment of a one-line user error: its type and first line."""
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__


class UnknownNameError(HarnessError, KeyError):
    def __str__(self) -> str:  # KeyError would quote the message
        return self.args[0]


@dataclass
class _Entry:
    source: str
    value: Any = None
    point: metadata.EntryPoint | None = None
    """Set until the entry is loaded (plugins only)."""


def plugin_entry_points(group: str) -> list[tuple[str, metadata.EntryPoint]]:
    """``(distribution, entry point)`` for every installed entry point in ``group`` (no imports)."""
    found = []
    for dist in metadata.distributions():
        for point in dist.entry_points:
            if point.group == group:
                found.append((f"{dist.metadata['Name']} {dist.version}", point))
    return found


class Registry(Generic[T]):
    """An ordered ``name -> entry`` mapping; ``kind`` names the entries in error messages.

    ``group``: the entry-point group whose entries join this registry.  ``accepts`` picks, among the
    loaded plugin objects, those that belong here (the ``harness.models`` group holds both families and
    model aliases); ``adapt`` turns a loaded object into an entry (a class into its instance).
    """

    def __init__(
        self,
        kind: str,
        group: str | None = None,
        accepts: Callable[[Any], bool] | None = None,
        adapt: Callable[[Any], T] | None = None,
    ):
        self.kind = kind
        self.group = group
        self._accepts = accepts or (lambda obj: True)
        self._adapt = adapt or (lambda obj: obj)
        self._entries: dict[str, _Entry] = {}
        self._discovered = group is None

    def register(self, name: str, entry: T | None = None, *, source: str = BUILT_IN):
        """``registry.register("x", obj)``, or ``@registry.register("x")`` as a decorator."""

        def add(obj: T) -> T:
            self._add(name, _Entry(source, obj))
            return obj

        return add(entry) if entry is not None else add

    def _add(self, name: str, entry: _Entry) -> None:
        if name in self._entries:
            raise HarnessError(
                f"{self.kind} {name!r} is registered twice: by {self._entries[name].source} "
                f"and by {entry.source}; uninstall one of them"
            )
        self._entries[name] = entry

    def _discover(self) -> None:
        if self._discovered:
            return
        self._discovered = True
        for source, point in plugin_entry_points(self.group):
            self._add(point.name, _Entry(source, point=point))

    def _load(self, name: str) -> bool:
        """Import a plugin entry; False when its object belongs to another registry of the group."""
        entry = self._entries[name]
        if entry.point is not None:
            try:
                obj = entry.point.load()
            except Exception as exc:  # a plugin's import error is its own; say whose it is
                raise HarnessError(
                    f"{self.kind} {name!r} from {entry.source} failed to load "
                    f"({entry.point.value}): {type(exc).__name__}: {exc}"
                ) from exc
            entry.point = None
            entry.value = self._adapt(obj) if self._accepts(obj) else _Foreign
        return entry.value is not _Foreign

    def get(self, name: str) -> T:
        self._discover()
        if name not in self._entries or not self._load(name):
            # listed without importing plugins: a broken one must not hide this message behind its own
            valid = [n for n, entry in self._entries.items() if entry.value is not _Foreign]
            raise UnknownNameError(f"unknown {self.kind} {name!r}; valid {self.kind}s: {', '.join(valid)}")
        return self._entries[name].value

    def source(self, name: str) -> str:
        self.get(name)
        return self._entries[name].source

    def names(self) -> list[str]:
        """Every name; plugin entries of a shared group are imported to learn which registry they belong to."""
        self._discover()
        return [name for name in list(self._entries) if self._load(name)]

    def __contains__(self, name: object) -> bool:
        self._discover()
        return name in self._entries and self._load(name)

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def items(self):
        return [(name, self._entries[name].value) for name in self.names()]


class _Foreign:
    """Marks a loaded plugin object that belongs to the other registry of a shared group."""


def instance(obj: Any) -> Any:
    """A plugin may name a class or an instance; registries hold instances."""
    return obj() if isinstance(obj, type) else obj


def describe(obj: Any) -> str:
    """One line about an entry: its ``description``, else the first line of its docstring."""
    text = getattr(obj, "description", "") or (type(obj).__doc__ or "")
    return text.strip().splitlines()[0] if text.strip() else ""
