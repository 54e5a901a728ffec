"""Plugin registries: built-in implementations by import path (imported only when first asked for: a config
naming them), third-party ones from entry-point groups, in-process ones by :meth:`Registry.add`. A name
offered twice is an error naming both origins; a plugin that fails to load raises, it is never skipped."""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from importlib.metadata import EntryPoint, entry_points
from typing import ClassVar, Generic, TypeVar

from pydantic import BaseModel, ConfigDict

from pipeline_check.core.errors import PluginError

T = TypeVar("T")
BUILTIN_ORIGIN = "pipeline-check (built in)"


class PluginSettings(BaseModel):
    """Base of every injector's and probe's settings model (one config section each)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # settings a section may leave out to take them from another section, e.g. the consumer-group
    # probe's bootstrap and topic from ``stages.kafka``: {"stages.kafka": ("bootstrap", "topic")}
    inherit: ClassVar[Mapping[str, tuple[str, ...]]] = {}


class Registry(Generic[T]):
    """Named implementations of one kind (probes, injectors, reporters, dialects...). Each is a class: with
    a ``Settings`` model when a config section configures it, else with the attributes ``needs`` names."""

    def __init__(
        self, kind: str, group: str, builtins: Mapping[str, str], *, needs: tuple[str, ...] | None = None
    ) -> None:
        self.kind = kind
        self.group = group
        self.needs = needs
        self._builtins = dict(builtins)  # name -> "module:attribute"
        self._loaded: dict[str, type[T]] = {}
        self._entry_points: dict[str, EntryPoint] | None = None

    def add(self, name: str, target: str) -> None:
        """Offer ``target`` (``"module:attribute"``) as ``name`` in this process: plugins defined beside a
        test suite or an application, without a distribution of their own."""
        if name in self._builtins and self._builtins[name] != target:
            raise PluginError(f"{self.kind} name {name!r} is taken by {self._builtins[name]}")
        self._builtins[name] = target
        self._loaded.pop(name, None)

    def get(self, name: str) -> type[T]:
        """The class registered as ``name``, imported now."""
        if name not in self._loaded:
            self._loaded[name] = self._load(name)
        return self._loaded[name]

    def names(self) -> list[str]:
        return sorted({*self._builtins, *self._plugins()})

    def in_order(self) -> list[str]:
        """Built-in and in-process names in the order they were registered, then third-party ones by name."""
        return [*self._builtins, *sorted(set(self._plugins()) - set(self._builtins))]

    def _load(self, name: str) -> type[T]:
        plugins = self._plugins()
        if name in self._builtins:
            module, _, attribute = self._builtins[name].partition(":")
            cls = getattr(importlib.import_module(module), attribute)
            return self._checked(name, cls, BUILTIN_ORIGIN)
        if name not in plugins:
            raise PluginError(
                f"no {self.kind} named {name!r}; known: {', '.join(self.names())} "
                f"(third-party ones register under the entry-point group {self.group!r})"
            )
        ep = plugins[name]
        try:
            cls = ep.load()
        except Exception as exc:  # a broken plugin is an error the user must see, whatever it raised
            raise PluginError(f"{self.kind} plugin {name!r} ({ep.value}) failed to load: {exc}") from exc
        return self._checked(name, cls, _origin(ep))

    def _plugins(self) -> dict[str, EntryPoint]:
        """Entry points of the group by name (metadata only: nothing is imported here)."""
        if self._entry_points is None:
            found: dict[str, EntryPoint] = {}
            for ep in entry_points(group=self.group):
                other = (
                    BUILTIN_ORIGIN
                    if ep.name in self._builtins
                    else (_origin(found[ep.name]) if ep.name in found else None)
                )
                if other is not None and other != _origin(ep):
                    raise PluginError(
                        f"{self.kind} name {ep.name!r} is offered by both {other} and {_origin(ep)}; "
                        "uninstall one of them or rename its entry point"
                    )
                found[ep.name] = ep
            self._entry_points = found
        return self._entry_points

    def _checked(self, name: str, cls: object, origin: str) -> type[T]:
        if self.needs is not None:
            if not isinstance(cls, type) or any(not hasattr(cls, attribute) for attribute in self.needs):
                raise PluginError(f"{self.kind} {name!r} from {origin} is not a class with {', '.join(self.needs)}")
            return cls
        settings = getattr(cls, "Settings", None)
        if not isinstance(cls, type) or not (isinstance(settings, type) and issubclass(settings, PluginSettings)):
            raise PluginError(
                f"{self.kind} {name!r} from {origin} is not a class with a `Settings` model "
                "(a subclass of pipeline_check.core.plugins.PluginSettings)"
            )
        return cls


def _origin(ep: EntryPoint) -> str:
    dist = ep.dist
    return f"{dist.name} {dist.version}" if dist is not None else ep.value
