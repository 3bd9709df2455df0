"""The NeXus and DXchange views of a reconstruction's output (DESIGN.md §4), for the readers beamlines use.

The volumes stay root datasets (``/phase``, ``/attenuation``, the per-frame scores: every reader of this
package reads them there); this module adds, as HDF5 hard links to those same datasets (no data copied):

    /                      @default = "entry" (the chain silx view and h5web follow to a plot)
    /entry                 NXentry, @default = "data"; title, program_name, start_time
    /entry/data            NXdata: @signal the first volume (phase), @auxiliary_signals the others
                           (attenuation), @axes [frame (or train, pulse), y, x]; the coordinates: frame
                           numbers of the archive, y and x in m (the pixel size, offset by --roi)
    /entry/scores          NXdata: @signal consistency, @auxiliary_signals the other per-frame values,
                           @axes the frame axes
    /entry/process         NXprocess: program, version, date, method, model_sha256, source_file,
                           configuration (NXnote, the model's TOML) and parameters (NXnote, the options)
    /exchange/data         the first volume (phase), /exchange/data_attenuation: what DXchange/tomopy read

The NXdata follow the NeXus 2014 axes convention (``@axes`` names one dataset or "." per dimension of the
signal, ``AXIS_indices`` says which), which silx's ``silx.io.nxdata`` parser checks in the tests.
"""

from __future__ import annotations

import json
import time
from typing import Any

import h5py
import numpy as np

from phasegan_hpc import __version__
from phasegan_hpc.data.archive import Archive
from phasegan_hpc.reconstruct.methods import Layout

ENTRY = "entry"


def frame_axes(archive: Archive) -> list[tuple[str, np.ndarray]]:
    """The output's leading axes and their coordinates: ("frame", the archive's row numbers along its first
    axis, as ``--frames`` and NXtomo's projections select them) for a stack; ("train", rows), ("pulse",
    0..P-1) for a trains x pulses archive."""
    lead = archive.lead_shape
    first = (np.asarray(archive.select, dtype=np.int64) if archive.select is not None
             else np.arange(lead[0], dtype=np.int64))
    if len(lead) == 1:
        return [("frame", first)]
    names = ["train", "pulse"] if len(lead) == 2 else [f"axis{i}" for i in range(len(lead))]
    return [(names[0], first), *((n, np.arange(k, dtype=np.int64)) for n, k in zip(names[1:], lead[1:],
                                                                                       strict=True))]


def pixel_coordinates(archive: Archive, layout: Layout) -> tuple[np.ndarray, np.ndarray]:
    """(y, x) in m of the output's pixels: index times the output's pixel size, plus the offset of
    ``--roi`` (in the archive's pixels, whose size is the output's times its resampling ratio)."""
    (h, w), (fh, fw) = layout.shape, archive.frame_shape
    y0, x0 = (archive.roi[0], archive.roi[2]) if archive.roi else (0, 0)
    p = layout.pixel_size_m
    return (y0 * p * h / fh + p * np.arange(h, dtype=np.float64),
            x0 * p * w / fw + p * np.arange(w, dtype=np.float64))


def _strings(names: list[str]) -> np.ndarray:
    return np.array(names, dtype=h5py.string_dtype())


def _nxdata(group: h5py.Group, signal: str, auxiliary: list[str], axes: list[tuple[str, Any]]) -> None:
    """Mark ``group`` NXdata of ``signal`` (and ``auxiliary``) over ``axes`` [(name, coordinate dataset or
    None: no coordinate, "." in @axes)], one per dimension of the signal."""
    group.attrs["NX_class"] = "NXdata"
    group.attrs["signal"] = signal
    if auxiliary:
        group.attrs["auxiliary_signals"] = _strings(auxiliary)
    group.attrs["axes"] = _strings([name if coord is not None else "." for name, coord in axes])
    for i, (name, coord) in enumerate(axes):
        if coord is None:
            continue
        if name not in group:
            group[name] = coord
        group.attrs[f"{name}_indices"] = i


def write_views(f: h5py.File, archive: Archive, layout: Layout, per_frame: list[str],
                attrs: dict[str, Any]) -> None:
    """Add the NeXus entry and the DXchange links to an output whose root holds the volumes
    (``layout.outputs``) and the per-frame datasets ``per_frame`` (the first is the signal of the scores).

    Args:
        f: the output file, open for writing.
        archive: its source (axes, coordinates, provenance).
        layout: the method's volumes, their shape and pixel size.
        per_frame: names of the per-frame root datasets, signal first.
        attrs: the output's root attributes (method, model_sha256, config, reconstruct_options...).
    """
    volumes = list(layout.outputs)
    f.attrs["default"] = ENTRY
    entry = f.create_group(ENTRY)
    entry.attrs.update({"NX_class": "NXentry", "default": "data"})
    entry["title"] = f"{attrs.get('method', '')} reconstruction of {archive.path.name}"
    entry["program_name"] = "phasegan-hpc"
    entry["program_name"].attrs["version"] = __version__
    entry["start_time"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")

    lead = frame_axes(archive)
    data = entry.create_group("data")
    coords = {}
    for name, values in lead:
        coords[name] = data.create_dataset(name, data=values)
        coords[name].attrs["long_name"] = f"{name} number in {archive.path.name}"
    y, x = pixel_coordinates(archive, layout)
    for name, values in (("y", y), ("x", x)):
        coords[name] = data.create_dataset(name, data=values)
        coords[name].attrs.update({"units": "m", "long_name": f"{name} (m)"})
    for name in volumes:
        data[name] = f[name]  # a hard link: the same dataset as /NAME
        f[name].attrs["interpretation"] = "image"
    _nxdata(data, volumes[0], volumes[1:], [(n, coords[n]) for n, _ in lead] + [("y", coords["y"]),
                                                                                 ("x", coords["x"])])

    scores = entry.create_group("scores")
    for name in per_frame:
        scores[name] = f[name]
    _nxdata(scores, per_frame[0], per_frame[1:], [(n, coords[n]) for n, _ in lead])

    process = entry.create_group("process")
    process.attrs["NX_class"] = "NXprocess"
    process["program"] = "phasegan-hpc"
    process["version"] = __version__
    process["date"] = entry["start_time"][()]
    process["sequence_index"] = 1
    for key in ("method", "model_sha256", "model_path", "source_file", "source_dataset"):
        if attrs.get(key):
            process[key] = str(attrs[key])
    for note, text, kind in (("configuration", attrs.get("config") or "", "text/x-toml"),
                             ("parameters", attrs.get("reconstruct_options") or json.dumps({}), "application/json")):
        g = process.create_group(note)
        g.attrs["NX_class"] = "NXnote"
        g["type"], g["data"] = kind, str(text)

    exchange = f.create_group("exchange")
    exchange["data"] = f[volumes[0]]
    for name in volumes[1:]:
        exchange[f"data_{name}"] = f[name]
