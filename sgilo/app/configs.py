"""Solver configs (CSGM, ILO, SGILO — Daras et al., ICML 2022) as JSON-ready dicts, for result.json, config.json and
calibration files. A leaf module of `sgilo.app`, so `solve` and `calibrate` can both use it without an import circle."""

from __future__ import annotations

import math
from dataclasses import fields, is_dataclass


# ----------------------------------------------------------------------------
# JSON-ready config (drops the perceptual callable; inf → "inf").


def config_dict(config) -> dict:
    """Fields of a (possibly nested) config dataclass as JSON-ready values."""
    def value(v):
        if is_dataclass(v) and not isinstance(v, type):
            return config_dict(v)
        return str(v) if isinstance(v, float) and not math.isfinite(v) else v
    return {f.name: value(getattr(config, f.name)) for f in fields(config) if f.name != "perceptual"}
