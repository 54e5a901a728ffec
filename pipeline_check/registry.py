"""A small typed registry, filled by decorators here and by entry points of third-party plugins."""

from __future__ import annotations

from collections.abc import Callable
from importlib.metadata import entry_points
from typing import Generic, TypeVar

from pipeline_check.errors import PluginError

T = TypeVar("T")


class Registry(Generic[T]):
    """Named implementations of one kind (injectors, probes). Plugins come from the entry-point
    ``group``; one that fails to load raises, it is never skipped."""

    def __init__(self, kind: str, group: str) -> None:
        self.kind = kind
        self.group = group
        self._items: dict[str, type[T]] = {}
        self._plugins_loaded = False

    def register(self, name: str) -> Callable[[type[T]], type[T]]:
        def add(cls: type[T]) -> type[T]:
            if name in self._items and self._items[name] is not cls:
                raise PluginError(f"{self.kind} {name!r} is registered twice ({self._items[name]!r} and {cls!r})")
            self._items[name] = cls
            return cls

        return add

    def get(self, name: str) -> type[T]:
        if name not in self._items:
            self._load_plugins()
        try:
            return self._items[name]
        except KeyError:
            raise PluginError(
                f"no {self.kind} named {name!r}; known: {', '.join(sorted(self._items))} "
                f"(plugins register under the entry-point group {self.group!r})"
            ) from None

    def names(self) -> list[str]:
        self._load_plugins()
        return sorted(self._items)

    def _load_plugins(self) -> None:
        if self._plugins_loaded:
            return
        self._plugins_loaded = True
        for ep in entry_points(group=self.group):
            try:
                cls = ep.load()
            except Exception as exc:  # a broken plugin is an error the user must see
                raise PluginError(f"{self.kind} plugin {ep.name!r} ({ep.value}) failed to load: {exc}") from exc
            if not isinstance(cls, type):
                raise PluginError(f"{self.kind} plugin {ep.name!r} ({ep.value}) is not a class")
            self.register(ep.name)(cls)
