"""Hyper-parameter search of the loss weights with Ray Tune (``phasegan-hpc tune``).

All Ray Tune code lives in this package.
"""
