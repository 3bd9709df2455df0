"""The one shape of a progress report: ``progress(done, total, info)``.

``simulate``, ``train`` and ``reconstruct`` all call it with absolute counts (``done`` of ``total`` items:
frames or steps; ``done`` may start above 0 when a run resumes) and a mapping of current figures
(training's losses; empty elsewhere). The CLI draws it (``ui.progress_bar``, ``ui.training_progress``);
library callers pass any function of that shape. :class:`Tally` turns "n more finished" into such calls
for loops that only know what they just finished.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

#: ``progress(done, total, info)``: ``done`` of ``total`` items finished; ``info`` figures worth showing.
ProgressFn = Callable[[int, int, Mapping[str, float]], None]


class Tally:
    """Counts finished items into ``progress(done, total, {})`` calls (nothing when ``progress`` is None)."""

    def __init__(self, progress: ProgressFn | None, total: int, done: int = 0) -> None:
        self.progress, self.total, self.done = progress, int(total), int(done)

    def add(self, n: int) -> None:
        """``n`` more items finished."""
        self.done += int(n)
        if self.progress is not None:
            self.progress(self.done, self.total, {})
