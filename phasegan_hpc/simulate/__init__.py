"""Synthetic data of paper §3: phantoms, flat-field model, detector, and the data-set writer."""

from phasegan_hpc.simulate.dataset import OUTPUT_FILES, FrameSimulator, simulate_dataset

__all__ = ["OUTPUT_FILES", "FrameSimulator", "simulate_dataset"]
