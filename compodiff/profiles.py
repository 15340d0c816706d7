"""Profiles as overlays: a profile file names the profile it ``extends`` and holds only what differs.

Resolving merges the chain (mappings key by key, anything else replaced; ``null`` sets a value to none;
a mapping with ``_replace: true`` replaces the base's whole)
and expands generated shard lists (``shards: {pattern: "laion-{:05d}", count: 128}``), so `params.yaml`
and DVC see complete, literal values. A profile without ``extends`` is complete on its own.
"""

from __future__ import annotations

import copy
from pathlib import Path

import yaml

from compodiff.config_schema import ConfigError

EXTENDS = "extends"
REPLACE = "_replace"  # in an overlay mapping: take it whole instead of merging it into the base's


def _read(path: Path) -> dict:
    if not path.is_file():
        raise ConfigError(f"profile file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a profile is a mapping of sections, got {type(data).__name__}")
    return data


def merge(base: dict, overlay: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in overlay.items():
        if isinstance(value, dict) and value.get(REPLACE) is True:
            out[key] = {k: copy.deepcopy(v) for k, v in value.items() if k != REPLACE}
        elif isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _shards(value, where: str):
    if not isinstance(value, dict):
        return value
    if set(value) != {"pattern", "count"} or not isinstance(value["count"], int) or value["count"] < 1:
        raise ConfigError(f"{where}: a generated shard list is {{pattern: 'name-{{:05d}}', count: N >= 1}}, "
                          f"got {value}")
    return [value["pattern"].format(i) for i in range(value["count"])]


def resolve(path: str | Path, _seen: tuple[Path, ...] = ()) -> dict:
    """The complete params mapping of the profile file at ``path`` (its ``extends`` chain merged)."""
    path = Path(path).resolve()
    if path in _seen:
        chain = " -> ".join(p.stem for p in (*_seen, path))
        raise ConfigError(f"profile {path.stem!r} extends itself: {chain}")
    data = _read(path)
    parent = data.pop(EXTENDS, None)
    if parent is not None:
        data = merge(resolve(path.parent / f"{parent}.yaml", (*_seen, path)), data)
    if isinstance(data.get("world"), dict) and "shards" in data["world"]:
        data["world"]["shards"] = _shards(data["world"]["shards"], f"{path}: world.shards")
    return data


def render(path: str | Path) -> str:
    """The text of `params.yaml` for a profile: the file itself when it is complete and literal (its
    comments kept), else the resolved mapping with a header naming the chain."""
    path = Path(path)
    text = path.read_text()
    data = _read(path)
    if EXTENDS not in data and not isinstance(data.get("world", {}).get("shards"), dict):
        return text
    chain, p = [path.stem], path
    while (parent := _read(p).get(EXTENDS)) is not None:
        chain.append(parent)
        p = p.parent / f"{parent}.yaml"
    header = (f"# Resolved from profiles/{' <- '.join(f'{c}.yaml' for c in chain)} by `compodiff profile "
              f"{path.stem}`:\n# edit the profile files, not this one.\n")
    return header + yaml.safe_dump(resolve(path), sort_keys=False, default_flow_style=None, width=120)
