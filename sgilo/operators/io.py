"""Save and load forward operators of SGILO (Daras et al., ICML 2022) with their random state.

An operator is stored like our models (`sgilo.checkpoints`): ``NAME.safetensors`` holds its persistent buffers (masks,
signs, filters, subsets, block seeds) and ``NAME.json`` holds ``{"format": "sgilo/operator", "config": {"class": …,
"args": get_config(), "noise": …}}``. Loading rebuilds the operator from its arguments and then loads the buffers
strictly, so a loaded operator gives bit-identical measurements. `OPERATOR_CLASSES` is the explicit allow-list of
classes that may be rebuilt.
"""

from __future__ import annotations

import os

from sgilo.checkpoints import load_model, load_state_dict_strict, save_model
from sgilo.operators.base import LinearOperator, noise_from_config, noise_to_config
from sgilo.operators.blur import Deblur
from sgilo.operators.cs import CompressedSensingCirculant, CompressedSensingGaussian
from sgilo.operators.inpainting import Inpainting
from sgilo.operators.pointwise import Colorization, Denoising
from sgilo.operators.resampling import SuperResolution

OPERATOR_CLASSES: dict[str, type[LinearOperator]] = {
    "Inpainting": Inpainting,
    "SuperResolution": SuperResolution,
    "Denoising": Denoising,
    "Colorization": Colorization,
    "Deblur": Deblur,
    "CompressedSensingGaussian": CompressedSensingGaussian,
    "CompressedSensingCirculant": CompressedSensingCirculant,
}


# ----------------------------------------------------------------------------
# The JSON-able description of an operator: class, constructor arguments, noise model.


def operator_config(op: LinearOperator) -> dict:
    name = type(op).__name__
    if OPERATOR_CLASSES.get(name) is not type(op):
        raise TypeError(f"cannot save operator of type {name}; expected one of {sorted(OPERATOR_CLASSES)}")
    return {"class": name, "args": op.get_config(), "noise": noise_to_config(op.noise)}


# ----------------------------------------------------------------------------
# Write NAME.safetensors + NAME.json atomically.


def save_operator(op: LinearOperator, path: str | os.PathLike) -> None:
    state = {k: v for k, v in op.state_dict().items() if not k.startswith("noise.")}
    save_model(path, "operator", operator_config(op), state)


# ----------------------------------------------------------------------------
# Rebuild from the config and load the buffers strictly.


def load_operator(path: str | os.PathLike) -> LinearOperator:
    cfg, state, _ = load_model(path, "operator")
    cls = OPERATOR_CLASSES.get(cfg.get("class"))
    if cls is None:
        raise ValueError(f"{path}: unknown operator class {cfg.get('class')!r}, "
                         f"expected one of {sorted(OPERATOR_CLASSES)}")
    op = cls.from_config(cfg["args"])
    op.noise = noise_from_config(cfg["noise"])
    load_state_dict_strict(op, state, source=str(path))
    return op
