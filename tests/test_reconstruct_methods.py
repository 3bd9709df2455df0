"""Retrieval methods (reconstruct/methods.py) through the pipeline, against independent references."""


import h5py
import numpy as np
import pytest
from movies import corrected_reference, read, write_dxchange

from phasegan_hpc.physics import paganin
from phasegan_hpc.reconstruct import ReconstructRequest, reconstruct

pytestmark = pytest.mark.slow


def test_paganin_through_the_pipeline(movie, tmp_path):
    archive = write_dxchange(tmp_path / "p.h5", movie, n=10)
    s = reconstruct(ReconstructRequest(archive, method="paganin", backend="local", batch_size=4, preview=False,
                                       physics={"delta_beta": 1000.0, "pixel_size_m": 1e-6, "distance_m": 0.1,
                                                "energy_kev": 12.398419843}))
    assert s.output.name == "p_paganin.h5"
    out = read(s.output)
    with h5py.File(archive, "r") as f:
        corr = corrected_reference(movie, f["exchange/data"][()], f["exchange/data_white"][()],
                                   f["exchange/data_dark"][()])
    phase, att = paganin(corr.astype(np.float64), pixel_size_m=1e-6, distance_m=0.1, delta_beta=1000.0,
                         energy_kev=12.398419843)
    np.testing.assert_allclose(out["phase"], phase, rtol=1e-4, atol=1e-3)  # float32 FFTs vs float64
    np.testing.assert_allclose(out["attenuation"], att, rtol=1e-4, atol=1e-6)

