"""Overrides of frozen solver configs (CSGM, ILO, SGILO — Daras et al., ICML 2022), nested fields included.

``replace_nested(cfg, {"eta": 1e-3, "curvature.kappa_z": 10})`` is `dataclasses.replace` that also reaches into
nested frozen dataclasses by dotted names (e.g. SGILO's ``curvature`` and ``reference`` options), so a tuning grid can
name them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import fields, is_dataclass, replace
from typing import Any


# ----------------------------------------------------------------------------
# dataclasses.replace with dotted names for nested dataclass fields.


def replace_nested(config: Any, overrides: Mapping[str, Any]) -> Any:
    """Returns a copy of ``config`` with ``overrides`` applied; 'a.b' sets field b of the nested dataclass in field a.

    One clear line for an unknown name (the known names are listed)."""
    names = {f.name for f in fields(config)}
    flat: dict[str, Any] = {}
    nested: dict[str, dict[str, Any]] = {}
    for key, value in overrides.items():
        head, _, rest = key.partition(".")
        if head not in names:
            raise ValueError(f"unknown option {key!r} of {type(config).__name__}; expected one of {sorted(names)}")
        if rest:
            nested.setdefault(head, {})[rest] = value
        else:
            flat[head] = value
    for head, sub in nested.items():
        inner = flat.get(head, getattr(config, head))
        if not is_dataclass(inner):
            raise ValueError(f"option {head!r} of {type(config).__name__} has no sub-options (got {sorted(sub)}); "
                             f"it is {inner!r}")
        flat[head] = replace_nested(inner, sub)
    return replace(config, **flat)
