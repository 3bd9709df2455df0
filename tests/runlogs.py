"""Reading a training run's logs back as their own readers do: TensorBoard's event accumulator, and
``metrics.jsonl`` as plain JSON (independently of ``phasegan_hpc.train.logs``)."""

import json
from pathlib import Path

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

#: Keys of a metrics.jsonl record that are not curves (the views leave them out).
NOT_CURVES = {"step", "time", "epoch"}


def event_scalars(log_dir: Path, purge: bool = True) -> dict[str, list[tuple[int, float]]]:
    """Every scalar curve in a TensorBoard log directory, as TensorBoard shows it (``purge``: with the
    points an interrupted writer left after a restart's purge step hidden; False: every point in the files)."""
    acc = EventAccumulator(str(log_dir), size_guidance={"scalars": 0}, purge_orphaned_data=purge)
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def jsonl_scalars(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """The numbers of a run's ``metrics.jsonl`` per key, in file order: what the views must hold."""
    out: dict[str, list[tuple[int, float]]] = {}
    for line in (Path(run_dir) / "metrics.jsonl").read_text().splitlines():
        rec = json.loads(line)
        if "event" in rec:
            continue
        for key, value in rec.items():
            if key not in NOT_CURVES and isinstance(value, (int, float)) and not isinstance(value, bool):
                out.setdefault(key, []).append((rec["step"], float(value)))
    return out


def assert_same_curves(shown: dict[str, list[tuple[int, float]]], record: dict[str, list[tuple[int, float]]],
                       rel: float = 1e-6) -> None:
    """Equal tags, equal steps per tag, values equal to float32 precision (TensorBoard stores float32)."""
    assert sorted(shown) == sorted(record)
    for tag, points in record.items():
        assert [s for s, _ in shown[tag]] == [s for s, _ in points], tag
        for (step, got), (_, want) in zip(shown[tag], points, strict=True):
            assert abs(got - want) <= rel * abs(want) + 1e-12, (tag, step, got, want)
