"""Score-based latent priors of SGILO (Daras et al., ICML 2022) on the VP-SDE of Song et al. (ICLR 2021)."""

from sgilo.priors.io import load_prior, save_prior
from sgilo.priors.losses import dsm_loss
from sgilo.priors.samplers import hot_start, ode_sample, pc_sample, reverse_pc
from sgilo.priors.scaling import LatentScaler
from sgilo.priors.score import GaussianScore, LatentPrior, eps_to_score
from sgilo.priors.score_net import LatentScoreNet, ScoreNetConfig
from sgilo.priors.sde import VPSDE

__all__ = [
    "VPSDE", "LatentScoreNet", "ScoreNetConfig", "LatentScaler", "LatentPrior", "GaussianScore", "eps_to_score",
    "dsm_loss", "pc_sample", "ode_sample", "hot_start", "reverse_pc", "save_prior", "load_prior",
]
