"""Metrics for SGILO (Daras et al., ICML 2022): per-image quality (PSNR, SSIM, residual, LPIPS), posterior-set
calibration (std map, diversity, coverage) and the distribution-level SWD (`sgilo.metrics.swd`)."""

from sgilo.metrics.posterior import coverage, diversity, std_map
from sgilo.metrics.quality import measurement_residual, mse, psnr, ssim

__all__ = ["psnr", "ssim", "mse", "measurement_residual", "std_map", "diversity", "coverage"]
