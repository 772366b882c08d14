"""Planners by name: the built-in ones and any a user registers.

``register_planner("mine", factory)`` makes ``factory(**options)`` available
as ``mine`` everywhere a planner is named: ``deepx-sim plan --planner mine``,
scenario files (``policy.planner: mine``), sweeps and the quality suite.

Registration must happen in every process that plans.  In your own script,
call :func:`register_planner` before planning.  For the command line and for
sweep workers, name the registering module(s) in ``DEEPX_SIM_PLUGINS``
(comma-separated importable modules), or expose the factory as an entry point
of your package in the ``deepx_sim.planners`` group (``mine =
mypkg.planners:MyPlanner``); both are loaded the first time a name is looked
up.  ``deepx_sim.plan.testing`` holds the contract checks a registered
planner should pass.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable
from importlib.metadata import entry_points
from typing import Any, Generic, TypeVar

from deepx_sim.errors import DeepxError, PlanError, closest_names
from deepx_sim.plan.base import Planner

PlannerFactory = Callable[..., Planner]
PLUGINS_ENV = "DEEPX_SIM_PLUGINS"
ENTRY_POINT_GROUP = "deepx_sim.planners"

F = TypeVar("F", bound=Callable[..., Any])
_loaded: set[str] = set()  # plugin sources already imported, per group


def load_plugins(group: str) -> dict[str, Callable[..., Any]]:
    """Import the modules named in DEEPX_SIM_PLUGINS (once each) and return the
    entry points of ``group`` not loaded before, by name."""
    for module in filter(None, (m.strip() for m in os.environ.get(PLUGINS_ENV, "").split(","))):
        if module in _loaded:
            continue
        _loaded.add(module)
        try:
            importlib.import_module(module)
        except ImportError as exc:
            raise DeepxError(f"{PLUGINS_ENV}: cannot import plugin module {module!r}: {exc}") from None
    found: dict[str, Callable[..., Any]] = {}
    if f"group:{group}" not in _loaded:
        _loaded.add(f"group:{group}")
        for ep in entry_points(group=group):
            try:
                found[ep.name] = ep.load()
            except Exception as exc:  # a broken plugin names itself rather than crashing the CLI
                raise DeepxError(f"entry point {ep.name!r} ({ep.value}) in group {group!r} "
                                 f"failed to load: {exc}") from None
    return found


class Registry(Generic[F]):
    """Named factories of one kind (planners, policies): built-ins, user
    registrations and plugins, with errors of the stage's exception type."""

    def __init__(self, kind: str, group: str, error: type[DeepxError]) -> None:
        self.kind, self.group, self.error = kind, group, error
        self._factories: dict[str, F] = {}
        self._builtin: set[str] = set()

    def add_builtin(self, name: str, factory: F) -> None:
        self._factories[name] = factory
        self._builtin.add(name)

    def register(self, name: str, factory: F, *, replace: bool = False) -> None:
        if not name or not all(c.isalnum() or c in "-_" for c in name):
            raise self.error(f"{self.kind} name must be letters, digits, '-' or '_', got {name!r}")
        if not callable(factory):
            raise self.error(f"{self.kind} {name!r}: factory must be callable, got {factory!r}")
        if name in self._builtin or (name in self._factories and not replace):
            raise self.error(f"{self.kind} {name!r} is already registered"
                             + ("" if name in self._builtin else "; pass replace=True to override it"))
        self._factories[name] = factory

    def unregister(self, name: str) -> None:
        if name in self._builtin:
            raise self.error(f"{self.kind} {name!r} is built in and cannot be removed")
        self._factories.pop(name, None)

    def names(self) -> list[str]:
        for name, factory in load_plugins(self.group).items():
            self._factories.setdefault(name, factory)
        return list(self._factories)

    def factory(self, name: str) -> F:
        known = self.names()
        if name not in self._factories:
            raise self.error(f"unknown {self.kind} {name!r}: {closest_names(name, known)}")
        return self._factories[name]


PLANNERS: Registry[PlannerFactory] = Registry("planner", ENTRY_POINT_GROUP, PlanError)


def register_planner(name: str, factory: PlannerFactory, *, replace: bool = False) -> None:
    """Make ``factory(**options) -> Planner`` available under ``name``.

    Raises PlanError if the name is taken (pass ``replace=True`` to override a
    user planner; built-in names cannot be replaced) or is not a plain name."""
    PLANNERS.register(name, factory, replace=replace)


def unregister_planner(name: str) -> None:
    """Remove a user planner (built-ins stay)."""
    PLANNERS.unregister(name)


def planner_names() -> list[str]:
    """Every registered planner, built-ins first."""
    return PLANNERS.names()


def get_planner(name: str, **options: Any) -> Planner:
    """A new planner by name; ``options`` go to its factory (e.g. DeepXPlanner's
    solver, time_limit_s, gap)."""
    factory = PLANNERS.factory(name)
    try:
        planner = factory(**options)
    except TypeError as exc:
        raise PlanError(f"planner {name!r} does not take options {sorted(options)}: {exc}") from None
    if not isinstance(planner, Planner):
        raise PlanError(f"planner {name!r}: its factory returned {type(planner).__name__}, "
                        f"not a deepx_sim.plan.Planner")
    return planner
