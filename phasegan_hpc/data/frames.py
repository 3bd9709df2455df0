"""Training and validation sets on disk (DESIGN.md §4) as indexable stacks of frames.

A :class:`FrameStack` reads some datasets of one HDF5 file, all (N, H, W), as channels: ``stack[idx]`` is
float32 (len(idx), C, H, W). Small files are read into memory once; large ones are read per batch in
sorted index order. The file is opened read-only, lazily, once per process.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import h5py
import hdf5plugin  # noqa: F401  (registers the Blosc / LZ4 / Zstd filters)
import numpy as np

from phasegan_hpc.errors import DataError
from phasegan_hpc.physics.geometry import Geometry, attr_float

#: Files up to this size are held in memory during training.
IN_MEMORY_BYTES = 2 << 30


class FrameStack:
    """Frames of ``datasets`` in ``path`` stacked as channels.

    Args:
        path: HDF5 file.
        datasets: dataset names, each (N, H, W) with the same N, H, W.

    Raises:
        DataError: missing file or dataset, not 3-D, or shapes that differ.
    """

    def __init__(self, path: str | Path, datasets: tuple[str, ...]) -> None:
        self.path = Path(path)
        self.datasets = tuple(datasets)
        if not self.path.is_file():
            raise DataError(f"{self.path} not found")
        try:
            with h5py.File(self.path, "r") as f:
                missing = [d for d in self.datasets if d not in f or not isinstance(f[d], h5py.Dataset)]
                if missing:
                    have = ", ".join(sorted(k for k in f if isinstance(f[k], h5py.Dataset))) or "none"
                    raise DataError(f"{self.path} has no dataset {', '.join('/' + m for m in missing)} "
                                    f"(it has: {have})")
                shapes = {d: f[d].shape for d in self.datasets}
                self.attrs = {k: (v.item() if hasattr(v, "item") else v) for k, v in f.attrs.items()}
        except OSError as exc:
            raise DataError(f"{self.path}: not a readable HDF5 file ({exc})") from None
        for d, s in shapes.items():
            if len(s) != 3:
                raise DataError(f"{self.path}:/{d} must be (N, H, W), has shape {s}")
        if len(set(shapes.values())) != 1:
            raise DataError(f"{self.path}: datasets differ in shape: {shapes}")
        n, h, w = next(iter(shapes.values()))
        self.n, self.shape = n, (h, w)
        self._file: h5py.File | None = None
        self._cache: np.ndarray | None = None

    def __len__(self) -> int:
        return self.n

    @property
    def channels(self) -> int:
        return len(self.datasets)

    def _open(self) -> h5py.File:
        if self._file is None:
            self._file = h5py.File(self.path, "r")
        return self._file

    def __getitem__(self, idx: np.ndarray | slice) -> np.ndarray:
        """Frames ``idx`` as float32 (len, C, H, W), in the order of ``idx``."""
        if self._cache is None and self.n * self.channels * self.shape[0] * self.shape[1] * 4 <= IN_MEMORY_BYTES:
            f = self._open()
            self._cache = np.stack([f[d][()] for d in self.datasets], axis=1).astype(np.float32, copy=False)
        if self._cache is not None:
            return self._cache[idx]
        idx = np.arange(self.n)[idx] if isinstance(idx, slice) else np.asarray(idx)
        order = np.argsort(idx)
        f = self._open()
        sorted_idx = idx[order]
        out = np.empty((len(idx), self.channels, *self.shape), np.float32)
        for c, d in enumerate(self.datasets):
            out[order, c] = f[d][sorted_idx]
        return out

    def __getstate__(self) -> dict:  # picklable for Ray / multiprocessing: reopen on the other side
        state = self.__dict__.copy()
        state["_file"] = None
        state["_cache"] = None
        return state


@dataclass
class TrainingData:
    """The data sets one training method reads.

    Attributes:
        objects: (phase, attenuation) stack, unpaired methods.
        intensities: (intensity,) stack, unpaired methods.
        paired: (intensity, phase, attenuation) stack, paired methods.
        validation: (intensity, phase, attenuation) stack, if ``validation.h5`` exists and is non-empty.
        geometry: from the files' attributes: the objects' pixel, the detector frames' pixel, wavelength and
            distance (no padding: that is the training's choice, ``[physics] pad``).
    """

    objects: FrameStack | None
    intensities: FrameStack | None
    paired: FrameStack | None
    validation: FrameStack | None
    geometry: Geometry

    @property
    def shape(self) -> tuple[int, int]:
        """Frame shape of the detector domain."""
        return next(s for s in (self.intensities, self.paired) if s is not None).shape

    @property
    def object_shape(self) -> tuple[int, int]:
        """Frame shape of the object domain."""
        return next(s for s in (self.objects, self.paired) if s is not None).shape


PAIRED = ("intensity", "phase", "attenuation")


def open_training_data(data_dir: str | Path, paired: bool, upsample: int = 1) -> TrainingData:
    """Open a data set written by ``phasegan-hpc simulate`` (or the foam pipeline) for training.

    Args:
        data_dir: directory with ``objects.h5`` + ``intensities.h5`` (unpaired) or ``paired.h5`` (paired),
            and optionally ``validation.h5``.
        paired: whether the method trains on pairs.
        upsample: detector pixel / object pixel (2: the two-detector case of paper §4, where the two
            domains' frames may differ in size and are cropped to matching fields of view in training;
            ``validation.h5`` then is not read: score such a model with ``evaluate``).

    Raises:
        DataError: missing files, wrong dataset names or shapes, object and intensity frames of different
            sizes, or missing physics attributes.
    """
    d = Path(data_dir)
    if d.exists() and not d.is_dir():
        raise DataError(f"{d} is a file, not a data directory (give the directory that holds objects.h5 and "
                        "intensities.h5)")
    if not d.is_dir():
        raise DataError(f"data directory {d} not found (make one with `phasegan-hpc simulate {d}`)")
    need = ["paired.h5"] if paired else ["objects.h5", "intensities.h5"]
    missing = [n for n in need if not (d / n).is_file()]
    if missing:
        hint = f"phasegan-hpc simulate {d} --paired N" if paired else f"phasegan-hpc simulate {d}"
        raise DataError(f"{d} lacks {', '.join(missing)} (make it with `{hint}`)")
    objects = intensities = pairs = None
    if paired:
        pairs = FrameStack(d / "paired.h5", PAIRED)
        stacks = [pairs]
    else:
        objects = FrameStack(d / "objects.h5", ("phase", "attenuation"))
        intensities = FrameStack(d / "intensities.h5", ("intensity",))
        stacks = [objects, intensities]
    validation = None
    if (d / "validation.h5").is_file() and upsample == 1:
        validation = FrameStack(d / "validation.h5", PAIRED)
        if len(validation) == 0:
            validation = None
        else:
            stacks.append(validation)
    shapes = {s.path.name: s.shape for s in stacks}
    if len(set(shapes.values())) != 1 and upsample == 1:
        raise DataError(f"{d}: frame sizes differ between files: {shapes}")
    for s in stacks:
        if len(s) == 0 and s is not validation:
            raise DataError(f"{s.path} holds no frames")
    attrs = stacks[0].attrs
    frames = intensities or pairs  # the frames' own file gives their pixel, else upsample x the objects'
    detector_pixel = (attr_float(frames.attrs, "pixel_size_m", str(frames.path))
                      if frames is not None and "pixel_size_m" in frames.attrs else None)
    if detector_pixel is None and "pixel_size_m" in attrs:
        detector_pixel = attr_float(attrs, "pixel_size_m", str(stacks[0].path)) * upsample
    geometry = Geometry.from_attrs(attrs, str(stacks[0].path), detector_pixel_size_m=detector_pixel)
    if abs(geometry.upsample - upsample) > 1e-6 * upsample:
        raise DataError(f"{d}: detector pixels of {geometry.detector_pixel_size_m:g} m and object pixels of "
                        f"{geometry.pixel_size_m:g} m (ratio {geometry.upsample:g}) do not fit [model] upsample = "
                        f"{upsample}")
    return TrainingData(objects, intensities, pairs, validation, geometry)
