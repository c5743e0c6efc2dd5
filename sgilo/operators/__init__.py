"""Forward operators y = noise(A x) for the inverse problems of SGILO (Daras et al., ICML 2022) and its baselines."""

from sgilo.operators.base import GaussianNoise, LinearOperator, NoiseModel, PoissonNoise
from sgilo.operators.blur import Deblur
from sgilo.operators.cs import CompressedSensingCirculant, CompressedSensingGaussian
from sgilo.operators.inpainting import Inpainting
from sgilo.operators.interop import PhysicsAdapter, as_operator
from sgilo.operators.io import load_operator, save_operator
from sgilo.operators.pointwise import Colorization, Denoising
from sgilo.operators.resampling import SuperResolution

__all__ = [
    "LinearOperator", "NoiseModel", "GaussianNoise", "PoissonNoise", "Inpainting", "SuperResolution", "Denoising",
    "Colorization", "Deblur", "CompressedSensingGaussian", "CompressedSensingCirculant", "PhysicsAdapter",
    "as_operator", "save_operator", "load_operator",
]
