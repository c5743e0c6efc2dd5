"""StyleGAN-2 generator with NVlabs parameter names, exact head/tail split, latent parameterisations and loaders."""

from sgilo.generator.io import bundled_available, load_generator, save_generator
from sgilo.generator.latents import GaussianizedW, fit_gaussianized_w, project_to_sphere, sphere_radius
from sgilo.generator.split import IntermediateState, advance, h_shape, head, tail
from sgilo.generator.stylegan2 import Generator, GeneratorConfig, MappingNetwork, SynthesisNetwork

__all__ = [
    "Generator", "GeneratorConfig", "MappingNetwork", "SynthesisNetwork", "IntermediateState", "head", "tail",
    "advance", "h_shape", "GaussianizedW", "fit_gaussianized_w", "project_to_sphere", "sphere_radius",
    "load_generator", "save_generator", "bundled_available",
]
