"""The training side of a packed store: a torch ``Dataset`` over its samples.

``smile_vlm.store`` writes and checks stores without torch (packing and the workflow's DAG
construction never load it); training and evaluation read the stores through this module.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
import zarr

from smile_vlm.store import open_store


class StoreDataset(torch.utils.data.Dataset):
    """Random access to a packed store, one sample per item.

    Item: ``images`` uint8 (V, H, W, C), ``label`` int64 (-1 = none), ``labels`` float32 (K,),
    ``index`` (store row), ``subject``. The Zarr group is opened lazily in each process, so the
    dataset pickles small and every DataLoader worker reads through its own handle.

    ``label_mode`` says which target the caller trains on. ``indices=None`` selects the samples
    that have one (``single``: a class in ``classes``; ``multi``: at least one positive label);
    explicit ``indices`` without a target raise, since the loss would silently see -1 or zeros.
    """

    def __init__(self, path: str | Path, indices=None, label_mode: str = "single"):
        if label_mode not in ("single", "multi"):
            raise ValueError(f"label_mode must be 'single' or 'multi', not {label_mode!r}")
        self.path = Path(path)
        self.label_mode = label_mode
        root = open_store(self.path)
        # Labels and subjects are small: read them once here rather than per item.
        self.label = root["label"][:]
        self.labels = root["labels"][:].astype(np.float32)
        self.subject = root["subject"][:].tolist()
        self.classes = list(root.attrs["classes"])
        has_target = self.label >= 0 if label_mode == "single" else self.labels.any(axis=1)
        if indices is None:
            self.indices = np.flatnonzero(has_target)
        else:
            self.indices = np.asarray(indices, dtype=np.int64).reshape(-1)
            out_of_range = self.indices[(self.indices < 0) | (self.indices >= len(self.label))]
            if out_of_range.size:
                raise IndexError(f"{self.path}: indices {out_of_range[:5].tolist()} "
                                 f"outside 0..{len(self.label) - 1}")
            without = self.indices[~has_target[self.indices]]
            if without.size:
                raise ValueError(f"{self.path}: {without.size} selected samples have no {label_mode}-label "
                                 f"target, e.g. store rows {without[:5].tolist()}")
        self._images = None
        self._pid = None
        self._memory = None  # (len, V, H, W, C) uint8 after load_images, in dataset order

    def load_images(self, max_mb: float) -> bool:
        """Read the selected samples' images into memory once, when they fit in ``max_mb``.

        Why: an epoch otherwise decompresses every sample's chunk again, a share of every CPU
        training step at the workflow's 224 px (benchmarks/bench_train.py --compare-baseline). The bytes are the store's, so nothing else changes.
        Returns whether the images are now in memory.
        """
        array = self._image_array()
        size = len(self) * int(np.prod(array.shape[1:])) * array.dtype.itemsize
        if size > max_mb * 2**20:
            return False
        memory = np.empty((len(self), *array.shape[1:]), dtype=array.dtype)
        for position, row in enumerate(self.indices):
            memory[position] = array[int(row)]
        self._memory = memory
        return True

    @property
    def in_memory(self) -> bool:
        return self._memory is not None

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, item: int) -> dict:
        row = int(self.indices[item])
        images = self._memory[item] if self._memory is not None else self._image_array()[row]
        return {
            "images": torch.from_numpy(np.ascontiguousarray(images)),
            "label": torch.tensor(self.label[row], dtype=torch.int64),
            "labels": torch.from_numpy(self.labels[row].copy()),
            "index": row,
            "subject": self.subject[row],
        }

    def _image_array(self) -> zarr.Array:
        if self._images is None or self._pid != os.getpid():
            self._images = zarr.open_group(self.path, mode="r")["images"]
            self._pid = os.getpid()
        return self._images

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_images"] = None  # workers open their own handle
        return state
