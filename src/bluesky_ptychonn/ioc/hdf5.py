"""HDF5 files in the layout of the areaDetector HDF5 plugin (NDFileHDF5), written in SWMR mode.

The simulated HDF5 plugin streams frames into one file per capture, as the real plugin in
"Stream" mode does, with the plugin's default layout:

| dataset | shape | content |
| --- | --- | --- |
| ``/entry/data/data`` | (N, H, W), detector dtype | frames, one chunk per frame |
| ``/entry/instrument/NDAttributes/NDArrayUniqueId`` | (N,) int32 | the driver's frame number |
| ``/entry/instrument/NDAttributes/NDArrayTimeStamp`` | (N,) float64 | frame time, s (epoch) |

The file is opened in SWMR mode and flushed after each batch, so a reader opening it with
``h5py.File(path, "r", swmr=True)`` sees every frame counted in ``NumCaptured_RBV``.
"""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np

DATA_PATH = "/entry/data/data"
UNIQUE_ID_PATH = "/entry/instrument/NDAttributes/NDArrayUniqueId"
TIMESTAMP_PATH = "/entry/instrument/NDAttributes/NDArrayTimeStamp"


class StreamFile:
    """One capture: frames appended in batches to a SWMR HDF5 file."""

    def __init__(self, path: str | Path, frame_shape: tuple[int, int], dtype: str):
        self.path = Path(path)
        self._file = h5py.File(self.path, "w", libver="latest")
        rows, cols = frame_shape
        self._data = self._file.create_dataset(
            DATA_PATH, (0, rows, cols), maxshape=(None, rows, cols), chunks=(1, rows, cols),
            dtype=dtype,
        )  # fmt: skip
        self._ids = self._file.create_dataset(
            UNIQUE_ID_PATH, (0,), maxshape=(None,), chunks=(4096,), dtype=np.int32
        )
        self._times = self._file.create_dataset(
            TIMESTAMP_PATH, (0,), maxshape=(None,), chunks=(4096,), dtype=np.float64
        )
        self._file.swmr_mode = True
        self.count = 0

    def append(self, frames: np.ndarray, unique_ids: np.ndarray, timestamps: np.ndarray) -> None:
        n = len(frames)
        end = self.count + n
        # ids and times first: a SWMR reader that sees a frame also sees its id
        for dataset, values in ((self._ids, unique_ids), (self._times, timestamps)):
            dataset.resize((end,))
            dataset[self.count : end] = values
            dataset.flush()
        self._data.resize((end, *self._data.shape[1:]))
        self._data[self.count : end] = frames
        self._data.flush()
        self.count = end

    def close(self) -> None:
        if self._file.id.valid:
            self._file.close()
