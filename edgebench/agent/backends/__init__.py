"""Creates the agent's inference backends from the engine catalog (edgebench.engines):
one module each, imported only when used, so that a device needs only the engines it runs."""

from __future__ import annotations

import importlib
from importlib.metadata import PackageNotFoundError, version

from edgebench.agent.backends.base import Backend, BackendError
from edgebench.engines import ENGINES, EngineError, engine


def create_backend(name: str) -> Backend:
    try:
        spec = engine(name)
    except EngineError as exc:
        raise BackendError(str(exc)) from None
    module_name, class_name = spec.implementation.split(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise BackendError(
            f"backend {name!r} needs {spec.distribution}: "
            f"pip install 'edgebench[{spec.extra}]' ({exc})"
        ) from exc
    backend: Backend = getattr(module, class_name)()
    return backend


def installed_engines() -> dict[str, str]:
    """Engine name -> installed version, for the hardware snapshot."""
    engines = {}
    for name, spec in ENGINES.items():
        try:
            engines[name] = version(spec.distribution)
        except PackageNotFoundError:
            continue
    return engines


__all__ = ["Backend", "BackendError", "create_backend", "installed_engines"]
