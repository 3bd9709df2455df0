"""The Fresnel propagator H, |H psi|^2 of a batch: the torch module (complex64, cached kernel) against a
float64 numpy transfer-function reference computed in the same run, in turns.
"""

from __future__ import annotations

import statistics
from typing import Any

import numpy as np
import torch

from phasegan_hpc.bench import interleaved_times, machine
from phasegan_hpc.physics import FresnelPropagator, object_wavefield


def numpy_intensity(psi: np.ndarray, pixel_size_m: float, distance_m: float, wavelength_m: float) -> np.ndarray:
    """|IFFT(FFT(psi) exp(-i pi lambda z f^2))|^2 in complex128, the kernel built every call (the reference)."""
    h, w = psi.shape[-2:]
    f2 = np.fft.fftfreq(h, pixel_size_m)[:, None] ** 2 + np.fft.fftfreq(w, pixel_size_m)[None, :] ** 2
    out = np.fft.ifft2(np.fft.fft2(psi) * np.exp(-1j * np.pi * wavelength_m * distance_m * f2))
    return out.real**2 + out.imag**2


def bench_propagator(size: int = 256, batch: int = 16, repeats: int = 10, device: str = "cpu",
                     pad: int = 0) -> dict[str, Any]:
    """Median ms of |H psi|^2 for (batch, size, size): torch module vs numpy float64, and their agreement."""
    dev = torch.device(device)
    g = torch.Generator().manual_seed(0)
    phase, att = -torch.rand(batch, size, size, generator=g), 0.01 * torch.rand(batch, size, size, generator=g)
    psi = object_wavefield(phase, att).to(dev)
    prop = FresnelPropagator((size, size), pixel_size_m=1e-6, distance_m=0.1, wavelength_m=1e-10, pad=pad)
    psi_np = psi.cpu().numpy().astype(np.complex128)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    times = interleaved_times({"torch": lambda: prop.intensity(psi),
                               "numpy_float64": lambda: numpy_intensity(psi_np, 1e-6, 0.1, 1e-10)}, repeats, sync=sync)
    ref = numpy_intensity(psi_np, 1e-6, 0.1, 1e-10) if pad == 0 else None
    err = float(np.abs(prop.intensity(psi).cpu().numpy() - ref).max()) if ref is not None else None
    ratios = [n / t for n, t in zip(times["numpy_float64"], times["torch"], strict=True)]
    return {"benchmark": "propagator", **machine(dev), "size": size, "batch": batch, "pad": pad, "repeats": repeats,
            "torch_ms": {"median": 1e3 * statistics.median(times["torch"]), "min": 1e3 * min(times["torch"]),
                         "max": 1e3 * max(times["torch"])},
            "numpy_float64_ms": {"median": 1e3 * statistics.median(times["numpy_float64"]),
                                 "min": 1e3 * min(times["numpy_float64"]), "max": 1e3 * max(times["numpy_float64"])},
            "speedup": statistics.median(ratios), "max_abs_difference": err}
