"""Theory experiments of Daras et al., "Score-Guided Intermediate Layer Optimization" (ICML 2022): Langevin dynamics
for inverting random expansive ReLU generators (Hand & Voroninski, COLT 2018 setting). See docs/theory.md."""
