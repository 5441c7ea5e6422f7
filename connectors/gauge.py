"""How many source rows this process holds: a gauge fed by the sources, read by streaming checks.

A source `track`s each chunk it reads; the rows count as held until the chunk is garbage,
so the peak shows whether a run streams (a few chunks at a time) or piles its data up.
"""

import threading
import weakref

import pandas as pd


class RowGauge:
    def __init__(self) -> None:
        self.held = 0
        self.peak = 0
        self._lock = threading.Lock()

    def track(self, frame: pd.DataFrame) -> pd.DataFrame:
        """Count `frame`'s rows as held until it is freed; returns `frame`."""
        rows = len(frame)
        with self._lock:
            self.held += rows
            self.peak = max(self.peak, self.held)
        weakref.finalize(frame, self._release, rows)
        return frame

    def reset_peak(self) -> None:
        with self._lock:
            self.peak = self.held

    def _release(self, rows: int) -> None:
        with self._lock:
            self.held -= rows


ROWS_HELD = RowGauge()
