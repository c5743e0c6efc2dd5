"""sgilo: posterior sampling in the intermediate latent space of StyleGAN-2 with score-based priors (SGILO, ICML 2022)."""
__version__ = "0.1.0"
