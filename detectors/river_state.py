"""Plain-data state of river's detectors, without pickle.

river's detectors keep their state in attributes that are numbers, small
Python statistics (``Mean``, ``Var``, ...) or Rust-backed objects that expose
``__getstate__``/``__setstate__`` as bytes. ``dump`` walks those attributes into
nested dicts; ``load`` writes them back into a freshly built detector of the
same parameters. Only attributes that already exist on the fresh object are
set, and only with a value of the same type, so a crafted snapshot can set
numbers but never create objects or run code. river has no serialisation of its
own besides pickle, hence this module.
"""

from __future__ import annotations

import inspect
from typing import Any

from detectors import SnapshotError

_SCALARS = (bool, int, float, str, type(None))


def dump(obj: object) -> dict[str, Any]:
    state: dict[str, Any] = {}
    for name, value in vars(obj).items():
        if inspect.ismethod(value) or inspect.isfunction(value):
            continue  # e.g. Page-Hinkley's chosen test: set by the constructor from its parameters
        if isinstance(value, _SCALARS):
            state[name] = value
        elif hasattr(value, "__dict__"):
            state[name] = {"attrs": dump(value)}
        elif callable(getattr(value, "__getstate__", None)):
            raw = value.__getstate__()
            if not isinstance(raw, bytes):
                raise TypeError(f"{type(value).__name__}.{name} has no byte state")
            state[name] = {"bytes": raw}
        else:
            raise TypeError(f"cannot snapshot {type(obj).__name__}.{name} of type {type(value).__name__}")
    return state


def load(obj: object, state: dict[str, Any], path: str = "") -> None:
    if not isinstance(state, dict):
        raise SnapshotError(f"state of {path or type(obj).__name__} must be a mapping")
    current = vars(obj)
    missing = sorted(name for name in _dumped(obj) if name not in state)
    if missing:
        raise SnapshotError(f"state of {path or type(obj).__name__} lacks {missing}")
    for name, value in state.items():
        where = f"{path}.{name}" if path else name
        if name not in current:
            raise SnapshotError(f"unknown state attribute {where!r}")
        target = current[name]
        if isinstance(value, dict) and "attrs" in value and hasattr(target, "__dict__"):
            load(target, value["attrs"], where)
        elif isinstance(value, dict) and "bytes" in value and not hasattr(target, "__dict__"):
            if not isinstance(value["bytes"], bytes):
                raise SnapshotError(f"byte state for {where!r} is not bytes")
            try:
                target.__setstate__(value["bytes"])
            except (KeyboardInterrupt, SystemExit):
                raise
            except BaseException as exc:  # the Rust side raises its own errors, even panics (BaseException)
                raise SnapshotError(f"bad byte state for {where!r}: {exc}") from exc
        elif isinstance(value, _SCALARS) and _same_kind(target, value):
            setattr(obj, name, value)
        else:
            raise SnapshotError(f"state attribute {where!r} has the wrong type {type(value).__name__}")


def _dumped(obj: object) -> list[str]:
    """The attributes ``dump`` writes: all but bound methods and functions."""
    return [name for name, value in vars(obj).items() if not (inspect.ismethod(value) or inspect.isfunction(value))]


def _same_kind(target: object, value: object) -> bool:
    if target is None:
        # An attribute not yet initialised (e.g. DDM's minima before warm-up) holds a number later.
        return value is None or (isinstance(value, (int, float)) and not isinstance(value, bool))
    if value is None:
        return False
    if isinstance(target, bool) or isinstance(value, bool):
        return isinstance(target, bool) and isinstance(value, bool)
    if isinstance(target, (int, float)):
        return isinstance(value, (int, float))
    return type(target) is type(value)
