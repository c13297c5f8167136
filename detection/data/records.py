"""Dataset records packed into one numpy buffer.

A Python list of 118k annotation dicts is copied page by page into every dataloader worker as
reference counts change (copy-on-write turns into copy-on-read). One flat buffer of fixed-width
arrays is never written after construction, so forked workers share it, and spawned workers
receive it as a single memcpy.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np


class RecordStore:
    """Named numpy arrays stored back to back in one contiguous uint8 buffer."""

    def __init__(self, arrays: Mapping[str, np.ndarray]):
        layout: dict[str, tuple[int, str, tuple[int, ...]]] = {}
        offset = 0
        for name, array in arrays.items():
            array = np.ascontiguousarray(array)
            # 8-byte alignment keeps every view naturally aligned for its dtype
            offset = (offset + 7) // 8 * 8
            layout[name] = (offset, array.dtype.str, array.shape)
            offset += array.nbytes
        buffer = np.zeros(offset, dtype=np.uint8)
        for name, array in arrays.items():
            start, _, _ = layout[name]
            array = np.ascontiguousarray(array)
            buffer[start : start + array.nbytes] = array.reshape(-1).view(np.uint8)
        self.buffer = buffer
        self.layout = layout
        self._make_views()

    def _make_views(self) -> None:
        self._views: dict[str, np.ndarray] = {}
        for name, (start, dtype, shape) in self.layout.items():
            count = int(np.prod(shape, dtype=np.int64))
            view = np.frombuffer(self.buffer, dtype=dtype, count=count, offset=start)
            view = view.reshape(shape)
            view.flags.writeable = False
            self._views[name] = view

    def __getitem__(self, name: str) -> np.ndarray:
        return self._views[name]

    def __contains__(self, name: str) -> bool:
        return name in self.layout

    def keys(self) -> list[str]:
        """The array names, in storage order."""
        return list(self.layout)

    @property
    def nbytes(self) -> int:
        """Size of the one buffer holding every array."""
        return int(self.buffer.nbytes)

    def __getstate__(self) -> dict:
        # the views are rebuilt on the other side: only the buffer travels
        return {"buffer": self.buffer, "layout": self.layout}

    def __setstate__(self, state: dict) -> None:
        self.buffer = state["buffer"]
        self.layout = state["layout"]
        self._make_views()

    def __repr__(self) -> str:
        fields = ", ".join(
            f"{k}{list(s)}:{np.dtype(d).name}" for k, (_, d, s) in self.layout.items()
        )
        return f"RecordStore({self.nbytes} bytes; {fields})"
