"""Application layer: what the commands do (solve, restore, demo, calibrate, bench glue, presets, output writing).

Imports flow one way: generator / operators / priors → solvers → app → cli. Nothing below `sgilo.app` imports it.
"""
