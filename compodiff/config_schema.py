"""Strict loading of nested frozen dataclasses from plain dicts (parsed YAML).

Unknown keys, missing keys and values of the wrong type are errors that name
the dotted key path and the file, never silently ignored: a typo in params.yaml
must not train a model with a default the user did not ask for.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any

from compodiff.errors import InputError


class ConfigError(InputError):
    pass


def from_dict(cls, data: Any, where: str = "", source: str = "params"):
    """Build dataclass ``cls`` from ``data``; ``where`` is the dotted path for messages."""
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: {where or 'top level'} must be a mapping, got {type(data).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(f"{source}: unknown key(s) {', '.join(_join(where, k) for k in unknown)}; "
                          f"allowed: {', '.join(sorted(fields))}")
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for name, f in fields.items():
        key = _join(where, name)
        if name not in data:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise ConfigError(f"{source}: missing key {key}")
            continue
        kwargs[name] = _convert(hints[name], data[name], key, source)
        _check_range(f, kwargs[name], key, source)
        _check_keys(f, kwargs[name], key, source)
    return cls(**kwargs)


def at_least(bound: float, above: bool = False) -> dict:
    """Field metadata: the value must be >= ``bound`` (> with ``above``); checked when params load."""
    return {"min": bound, "above": above}


def keys_of(keys: tuple[str, ...], inner: tuple[str, ...] | None = None) -> dict:
    """Field metadata for a mapping field: its keys must be among ``keys`` and, with ``inner``, each value's
    keys among ``inner``; checked when params load, so a misspelt key is an error and not ignored."""
    return {"keys": keys, "inner_keys": inner}


def _check_keys(f: dataclasses.Field, value, key: str, source: str) -> None:
    allowed, inner = f.metadata.get("keys"), f.metadata.get("inner_keys")
    if allowed is None or not isinstance(value, dict):
        return
    unknown = [_join(key, k) for k in sorted(set(value) - set(allowed))]
    if inner is not None:
        unknown += [_join(_join(key, k), x) for k, v in value.items() if isinstance(v, dict)
                    for x in sorted(set(v) - set(inner))]
    if unknown:
        raise ConfigError(f"{source}: unknown key(s) {', '.join(unknown)}; allowed: {', '.join(allowed)}"
                          + (f" with {', '.join(inner)}" if inner is not None else ""))


def _check_range(f: dataclasses.Field, value, key: str, source: str) -> None:
    bound = f.metadata.get("min")
    if bound is None or not isinstance(value, (int, float)) or isinstance(value, bool):
        return
    if value < bound or (f.metadata.get("above") and value == bound):
        raise ConfigError(f"{source}: {key} is {value}; it must be {'>' if f.metadata.get('above') else '>='} {bound}")


def to_dict(obj) -> dict:
    return dataclasses.asdict(obj)


def digest(obj, leave_out: tuple[str, ...] = ("checks",)) -> str:
    """A short hash of the settings that train and score, so results can say which settings made them: every
    top-level key but ``leave_out`` (the asset checks' thresholds change no output)."""
    import hashlib
    import json

    d = {k: v for k, v in to_dict(obj).items() if k not in leave_out}
    return hashlib.sha256(json.dumps(d, sort_keys=True, default=str).encode()).hexdigest()[:16]


def flatten(d: dict, prefix: str = "") -> dict[str, Any]:
    """Nested dict -> {"a.b.c": value}: the one flat dict logged to MLflow."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}.{k}" if prefix else str(k)
        if isinstance(v, dict):
            out.update(flatten(v, key))
        else:
            out[key] = v
    return out


def _join(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key


def _convert(tp, value, key: str, source: str):
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        errors = []
        for a in inner:
            try:
                return _convert(a, value, key, source)
            except ConfigError as err:
                errors.append(str(err))
        raise ConfigError(errors[0] if len(errors) == 1 else f"{source}: {key}: {value!r} fits none of {inner}")
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, key, source)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{source}: {key} must be a list, got {value!r}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_convert(args[0], v, f"{key}[{i}]", source) for i, v in enumerate(value))
        if len(args) != len(value):
            raise ConfigError(f"{source}: {key} must have {len(args)} items, got {len(value)}")
        return tuple(_convert(a, v, f"{key}[{i}]", source) for i, (a, v) in enumerate(zip(args, value)))
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{source}: {key} must be a mapping, got {value!r}")
        return {str(k): _convert(args[1], v, f"{key}.{k}", source) for k, v in value.items()}
    if tp is Any:
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            raise ConfigError(f"{source}: {key} must be a number, got {value!r}")
        try:
            return float(value)  # YAML reads 1e-4 as a string
        except ValueError:
            raise ConfigError(f"{source}: {key} must be a number, got {value!r}") from None
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{source}: {key} must be an integer, got {value!r}")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{source}: {key} must be true or false, got {value!r}")
        return value
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{source}: {key} must be a string, got {value!r}")
        return value
    raise ConfigError(f"{source}: {key}: unsupported type {tp}")
