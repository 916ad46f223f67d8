"""One Zarr v3 store per dataset: the rendered views of every sample, with labels and metadata.

Layout of ``store.zarr`` (N samples, V views, K classes):

- ``images``     (N, V, H, W, C) uint8, one chunk per sample, Blosc zstd + byte shuffle
  (9.7x on the synthetic default; BENCHMARKS.md, "Stores and loading"); for 4D samples the views are dynamic images.
- ``label``      (N,) int64, index into ``attrs["classes"]``, -1 when the sample has no class we use.
- ``labels``     (N, K) uint8 multi-hot, from the manifest's pipe-joined ``labels`` column.
- ``intensity``  (N,) int64 (BU-3DFE level 0-4, else -1); ``n_frames`` (N,) int64 (1 for 3D scans).
- ``sample_id``, ``subject``, ``sequence``, ``source`` (N,) strings; ``source`` is the sample's
  mesh paths in frame order, pipe-joined like the manifest's ``labels``.
  Strings use zarr's variable-length ``string`` data type (vlen-utf8 codec), which has a Zarr v3
  spec; fixed-width numpy unicode raises ``UnstableSpecificationWarning`` in zarr 3.1.6.
- attrs: ``dataset, classes, multi_label, views, render, settings_hash, kind, n_samples,
  n_missing, image_layout`` and, written last, ``complete: true``.

The store is built in a temporary sibling and renamed onto its final path only when complete,
so a killed job leaves nothing that ``open_store`` (or Snakemake) accepts. Samples of the
manifest that have no rendered images are left out and listed, with the reason, in
``<store parent>/store_missing.csv`` (columns ``sample_id, reason``).
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import zarr
from PIL import Image
from zarr.codecs import BloscCodec, BloscShuffle

from smile_vlm import atomic
from smile_vlm.errors import ScanError

log = logging.getLogger(__name__)
PROGRESS_SECONDS = 10.0  # a progress line at most this often while a large store is written

DEFAULT_COMPRESSION_LEVEL = 3
MISSING_CSV_NAME = "store_missing.csv"
STRING_COLUMNS = ("sample_id", "subject", "sequence", "source")
MANIFEST_COLUMNS = ("dataset", "sample_id", "subject", "sequence", "frame", "label", "labels",
                    "intensity", "mesh_path")
SHARD_INDEX_COLUMNS = ("sample_id", "n_frames", "images")
REQUIRED_ATTRS = ("dataset", "classes", "multi_label", "views", "render", "settings_hash",
                  "n_samples")


# --------------------------------------------------------------------------- writing

def settings_hash(render_settings: dict) -> str:
    """sha256 of the canonical JSON (sorted keys, no whitespace) of the render settings."""
    canonical = json.dumps(render_settings, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def pack_store(manifest_csv: str | Path, shard_index_csvs, out_path: str | Path, dataset: str,
               settings: dict) -> None:
    """Pack the rendered views of ``dataset`` into ``out_path`` (a Zarr v3 directory), atomically.

    ``settings``: ``classes`` (names in index order), ``multi_label`` (bool), ``views`` (list of
    ``{yaw, pitch}``), ``render`` (dict, stored and hashed), optional ``compression_level``
    (Blosc zstd level, default 3) and ``kind`` (e.g. ``"dynamic image"``; by default derived from
    the frame counts). Also writes ``<out_path parent>/store_missing.csv``.
    """
    manifest_csv, out_path = Path(manifest_csv), Path(out_path)
    classes = list(_require(settings, "classes"))
    views = list(_require(settings, "views"))
    render_settings = dict(_require(settings, "render"))
    multi_label = bool(_require(settings, "multi_label"))
    level = int(settings.get("compression_level", DEFAULT_COMPRESSION_LEVEL))

    samples = _manifest_samples(manifest_csv, dataset)
    rendered = _read_shard_indexes(shard_index_csvs)
    kept, missing = _match_renders(samples, rendered, len(views), dataset)
    if not kept:
        raise ScanError(manifest_csv, f"no rendered samples for {dataset}")
    table = samples.loc[kept]
    images_per_sample = [rendered[s]["images"] for s in kept]
    n_frames = np.array([rendered[s]["n_frames"] for s in kept], dtype=np.int64)
    height, width, channels = _read_png(images_per_sample[0][0]).shape
    shape = (len(kept), len(views), height, width, channels)
    log.info("packing %d %s samples (%d missing) into %s: images %s uint8, zstd level %d",
             len(kept), dataset, len(missing), out_path, "x".join(map(str, shape)), level)
    started = time.perf_counter()

    with atomic.atomic_path(out_path) as tmp:
        root = zarr.open_group(tmp, mode="w")
        images = root.create_array(
            "images", shape=(len(kept), len(views), height, width, channels), dtype="uint8",
            chunks=(1, len(views), height, width, channels),
            compressors=BloscCodec(cname="zstd", clevel=level, shuffle=BloscShuffle.shuffle))
        images.attrs["layout"] = "N,view,H,W,C"
        # One sample in memory at a time: 4D stores of BP4D hold thousands of samples.
        last_line = time.perf_counter()
        for row, paths in enumerate(images_per_sample):
            images[row] = np.stack([_read_png(p, expected=(height, width, channels)) for p in paths])
            if time.perf_counter() - last_line > PROGRESS_SECONDS:
                log.info("%d/%d samples written", row + 1, len(kept))
                last_line = time.perf_counter()
        _write_metadata(root, table, n_frames, classes)

        root.attrs.update({
            "dataset": dataset,
            "classes": classes,
            "multi_label": multi_label,
            "views": views,
            "render": render_settings,
            "settings_hash": settings_hash(render_settings),
            "kind": settings.get("kind") or ("dynamic image" if n_frames.max() > 1 else "static render"),
            "n_samples": len(kept),
            "n_missing": len(missing),
            "image_layout": "N,view,H,W,C",
        })
        # Last: a store without this attribute is refused even if someone finds the temp dir.
        root.attrs["complete"] = True
        # Written just before the store appears, so a store never sits beside a stale list.
        atomic.write_csv(out_path.parent / MISSING_CSV_NAME,
                         pd.DataFrame(missing, columns=["sample_id", "reason"]))
    raw = int(np.prod(shape))
    stored = _folder_bytes(out_path / "images")
    log.info("store %s: %d samples, %.1f MB raw, %.1f MB on disk (%.1fx compression), %.1f s",
             out_path, len(kept), raw / 1e6, stored / 1e6, raw / max(stored, 1), time.perf_counter() - started)


def _folder_bytes(folder: Path) -> int:
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())


def _match_renders(samples: pd.DataFrame, rendered: dict, n_views: int, dataset: str):
    """Split manifest samples into rendered ones (kept) and ``(sample_id, reason)`` missing ones."""
    unknown = sorted(set(rendered) - set(samples.index))
    if unknown:
        # A shard from another manifest (stale output) would silently mislabel samples.
        raise ScanError(rendered[unknown[0]]["index_csv"],
                        f"{len(unknown)} rendered samples not in the {dataset} manifest, e.g. {unknown[0]}")
    kept, missing = [], []
    for sample_id in samples.index:
        entry = rendered.get(sample_id)
        if entry is None:
            missing.append((sample_id, "not rendered: no row in any shard index.csv"))
        elif not entry["images"]:
            missing.append((sample_id, f"no images listed in {entry['index_csv']}"))
        elif len(entry["images"]) != n_views:
            raise ScanError(entry["index_csv"], f"{sample_id} has {len(entry['images'])} images, "
                                                f"expected one per view ({n_views})")
        else:
            kept.append(sample_id)
    return kept, missing


def _write_metadata(root: zarr.Group, table: pd.DataFrame, n_frames: np.ndarray, classes: list[str]) -> None:
    label = [classes.index(name) if name in classes else -1 for name in table["label"]]
    _write_1d(root, "label", np.array(label, dtype=np.int64))
    root.create_array("labels", data=_multi_hot(table["labels"], classes),
                      chunks=(len(table), len(classes)))
    _write_1d(root, "intensity", table["intensity"].to_numpy(np.int64))
    _write_1d(root, "n_frames", n_frames)
    strings = {"sample_id": table.index, "subject": table["subject"], "sequence": table["sequence"],
               "source": table["source"]}
    for name, values in strings.items():
        # dtype=str is zarr's variable-length "string" type (vlen-utf8), specified for Zarr v3.
        _write_1d(root, name, np.array(list(values), dtype=object), dtype=str)


def _require(settings: dict, key: str):
    if key not in settings:
        raise KeyError(f"store settings need {key!r} (have {sorted(settings)})")
    return settings[key]


def _manifest_samples(manifest_csv: Path, dataset: str) -> pd.DataFrame:
    """One row per sample_id (manifest order): metadata of its first row, mesh paths by frame."""
    try:
        rows = pd.read_csv(manifest_csv, dtype=str, keep_default_na=False)
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError) as err:
        raise ScanError(manifest_csv, f"unreadable manifest ({err})") from err
    absent = [c for c in MANIFEST_COLUMNS if c not in rows.columns]
    if absent:
        raise ScanError(manifest_csv, f"manifest lacks columns {absent}")
    rows = rows[rows["dataset"] == dataset]
    if rows.empty:
        raise ScanError(manifest_csv, f"no rows for dataset {dataset!r}")
    for column in ("frame", "intensity"):
        numbers = pd.to_numeric(rows[column], errors="coerce")
        not_integer = numbers.isna() | (numbers % 1 != 0)
        if not_integer.any():
            bad = rows.loc[not_integer, column].iloc[0]
            raise ScanError(manifest_csv, f"column {column} holds a non-integer value {bad!r}")
        rows = rows.assign(**{column: numbers.astype(np.int64)})

    order = pd.unique(rows["sample_id"])
    grouped = rows.sort_values("frame", kind="stable").groupby("sample_id", sort=False)
    samples = grouped[["subject", "sequence", "label", "labels", "intensity"]].first()
    samples["source"] = grouped["mesh_path"].agg("|".join)
    return samples.loc[order]


def _read_shard_indexes(shard_index_csvs) -> dict[str, dict]:
    """sample_id -> {images: [Path per view], n_frames, index_csv} over all shard index files.

    Relative image paths are taken relative to the index file's folder (where render writes its
    PNGs) when they exist there, else relative to the working directory (Snakemake's cwd).
    """
    rendered: dict[str, dict] = {}
    for index_csv in map(Path, shard_index_csvs):
        try:
            frame = pd.read_csv(index_csv, dtype=str, keep_default_na=False)
        except (OSError, pd.errors.ParserError) as err:
            raise ScanError(index_csv, f"unreadable shard index ({err})") from err
        except pd.errors.EmptyDataError:
            continue  # a subject whose every sample was rejected at render
        absent = [c for c in SHARD_INDEX_COLUMNS if c not in frame.columns]
        if absent:
            raise ScanError(index_csv, f"shard index lacks columns {absent}")
        for sample_id, n_frames, images in frame[list(SHARD_INDEX_COLUMNS)].itertuples(index=False):
            if sample_id in rendered:
                raise ScanError(index_csv, f"{sample_id} also listed in {rendered[sample_id]['index_csv']}")
            try:
                frames = int(n_frames)
            except ValueError:
                raise ScanError(index_csv, f"{sample_id}: n_frames {n_frames!r} is not an integer") from None
            paths = [_resolve_image(index_csv, p) for p in images.split("|") if p]
            rendered[sample_id] = {"images": paths, "n_frames": frames, "index_csv": index_csv}
    return rendered


def _resolve_image(index_csv: Path, image: str) -> Path:
    path = Path(image)
    if not path.is_absolute() and (index_csv.parent / path).exists():
        return index_csv.parent / path
    return path


def _read_png(path: Path, expected: tuple[int, int, int] | None = None) -> np.ndarray:
    try:
        with Image.open(path) as image:
            if image.mode == "L":  # a grey render (e.g. depth): replicating it is lossless
                image = image.convert("RGB")
            if image.mode != "RGB":
                raise ScanError(path, f"expected an RGB image, got mode {image.mode}")
            array = np.asarray(image, dtype=np.uint8)
    except (OSError, SyntaxError) as err:
        raise ScanError(path, f"unreadable image ({err})") from err
    if expected is not None and array.shape != expected:
        raise ScanError(path, f"image shape {array.shape} differs from the first image's {expected}")
    return array


def _multi_hot(joined_labels, classes: list[str]) -> np.ndarray:
    """Pipe-joined names -> (N, K) uint8; names outside ``classes`` are dropped like ``label``."""
    position = {name: k for k, name in enumerate(classes)}
    hot = np.zeros((len(joined_labels), len(classes)), dtype=np.uint8)
    for row, joined in enumerate(joined_labels):
        for name in filter(None, joined.split("|")):
            if name in position:
                hot[row, position[name]] = 1
    return hot


def _write_1d(root: zarr.Group, name: str, values: np.ndarray, dtype=None) -> None:
    array = root.create_array(name, shape=values.shape, dtype=dtype or values.dtype,
                              chunks=values.shape)
    array[:] = values


# --------------------------------------------------------------------------- reading

# Snakemake drops a .snakemake_timestamp file into directory outputs; zarr warns about any foreign
# file in a group whenever it lists members, which would print on every read of a store.
warnings.filterwarnings("ignore", message=r"Object at \.snakemake_timestamp is not recognized")


def _open_for_reading(path):
    return zarr.open_group(path, mode="r")


def open_store(path: str | Path) -> zarr.Group:
    """Open a packed store read-only; refuse a missing, incomplete or malformed one (ScanError)."""
    path = Path(path)
    if not (path / "zarr.json").is_file():
        raise ScanError(path, "no Zarr v3 store here (zarr.json missing)")
    try:
        root = _open_for_reading(path)
    except Exception as err:  # zarr raises several types for damaged metadata
        raise ScanError(path, f"not a readable Zarr group ({type(err).__name__}: {err})") from err
    attrs = root.attrs.asdict()
    if attrs.get("complete") is not True:
        raise ScanError(path, "incomplete store (no complete attr): packing did not finish")
    absent = [key for key in REQUIRED_ATTRS if key not in attrs]
    if absent:
        raise ScanError(path, f"store attrs lack {absent}")

    n_samples, n_classes = attrs["n_samples"], len(attrs["classes"])
    expected = {"images": None, "label": (n_samples,), "labels": (n_samples, n_classes),
                "intensity": (n_samples,), **{name: (n_samples,) for name in STRING_COLUMNS}}
    members = set(root.array_keys())
    for name, shape in expected.items():
        if name not in members:
            raise ScanError(path, f"store lacks the {name!r} array")
        if shape is not None and root[name].shape != shape:
            raise ScanError(path, f"{name!r} has shape {root[name].shape}, expected {shape}")
    images_shape = root["images"].shape
    if len(images_shape) != 5 or images_shape[:2] != (n_samples, len(attrs["views"])):
        raise ScanError(path, f"'images' has shape {images_shape}, expected "
                              f"({n_samples}, {len(attrs['views'])}, H, W, C)")
    return root


def store_table(path: str | Path) -> pd.DataFrame:
    """All per-sample metadata as a DataFrame indexed by store row.

    Columns: ``sample_id, subject, sequence, label`` (class name, '' when none), ``label_index``,
    ``labels`` (pipe-joined names), ``intensity, n_frames, source``.
    """
    root = open_store(path)
    classes = root.attrs["classes"]
    label_index = root["label"][:]
    multi_hot = root["labels"][:]
    table = pd.DataFrame({name: root[name][:].tolist() for name in ("sample_id", "subject", "sequence")})
    table["label"] = [classes[k] if k >= 0 else "" for k in label_index]
    table["label_index"] = label_index
    table["labels"] = ["|".join(c for c, on in zip(classes, row) if on) for row in multi_hot]
    table["intensity"] = root["intensity"][:]
    table["n_frames"] = root["n_frames"][:] if "n_frames" in root.array_keys() else 1
    table["source"] = root["source"][:].tolist()
    table.index.name = "index"
    return table


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

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, item: int) -> dict:
        row = int(self.indices[item])
        return {
            "images": torch.from_numpy(np.ascontiguousarray(self._image_array()[row])),
            "label": torch.tensor(self.label[row], dtype=torch.int64),
            "labels": torch.from_numpy(self.labels[row].copy()),
            "index": row,
            "subject": self.subject[row],
        }

    def _image_array(self) -> zarr.Array:
        if self._images is None or self._pid != os.getpid():
            self._images = _open_for_reading(self.path)["images"]
            self._pid = os.getpid()
        return self._images

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_images"] = None  # workers open their own handle
        return state


# --------------------------------------------------------------------------- contact sheet

SHEET_DPI = 100
SHEET_CELL_INCHES = 1.6  # one view image
SHEET_LABEL_INCHES = 1.2  # left band for the class names
SHEET_TITLE_INCHES = 0.8  # top band for the title and view angles


def sheet_size_pixels(n_classes: int, per_class: int, n_views: int) -> tuple[int, int]:
    """(width, height) in pixels of the contact sheet for this grid."""
    width = SHEET_LABEL_INCHES + per_class * n_views * SHEET_CELL_INCHES
    height = SHEET_TITLE_INCHES + n_classes * SHEET_CELL_INCHES
    return round(width * SHEET_DPI), round(height * SHEET_DPI)


def contact_sheet(store_path: str | Path, out_png: str | Path, per_class: int = 3, seed: int = 0) -> None:
    """A grid PNG: one row per class, ``per_class`` random samples of it, all views side by side."""
    from matplotlib.figure import Figure  # no pyplot: no global backend or figure state

    root = open_store(store_path)
    attrs = root.attrs.asdict()
    classes, views = attrs["classes"], attrs["views"]
    members = root["labels"][:].astype(bool) if attrs["multi_label"] else \
        root["label"][:][:, None] == np.arange(len(classes))[None, :]
    sample_ids = root["sample_id"][:].tolist()
    rng = np.random.default_rng(seed)

    width, height = sheet_size_pixels(len(classes), per_class, len(views))
    figure = Figure(figsize=(width / SHEET_DPI, height / SHEET_DPI), dpi=SHEET_DPI)
    grid = figure.add_gridspec(
        len(classes), per_class * len(views), wspace=0.04, hspace=0.25,
        left=SHEET_LABEL_INCHES * SHEET_DPI / width, right=0.995,
        top=1 - SHEET_TITLE_INCHES * SHEET_DPI / height, bottom=0.02)
    kind = f" ({attrs['kind']})" if attrs.get("kind") else ""
    figure.suptitle(f"{attrs['dataset']}: {attrs['n_samples']} samples{kind}, "
                    f"{per_class} per class, seed {seed}", fontsize=12, y=1 - 0.15 / (height / SHEET_DPI))

    for class_row, name in enumerate(classes):
        candidates = np.flatnonzero(members[:, class_row])
        chosen = np.sort(rng.choice(candidates, size=min(per_class, candidates.size), replace=False))
        for slot in range(per_class):
            for view, angles in enumerate(views):
                axis = figure.add_subplot(grid[class_row, slot * len(views) + view])
                axis.set_xticks([])
                axis.set_yticks([])
                if class_row == 0:
                    axis.set_title(f"yaw {angles['yaw']:+g}° pitch {angles['pitch']:+g}°", fontsize=7)
                if slot == 0 and view == 0:
                    axis.set_ylabel(f"{name}\nn={candidates.size}", fontsize=10, rotation=0,
                                    ha="right", va="center", labelpad=8)
                if slot >= chosen.size:
                    axis.set_frame_on(False)
                    if slot == 0 and view == 0:
                        axis.text(0.0, 0.5, "no samples", transform=axis.transAxes, fontsize=9)
                    continue
                row = int(chosen[slot])
                axis.imshow(root["images"][row, view], interpolation="antialiased")
                if view == 0:
                    axis.set_xlabel(sample_ids[row], fontsize=6, loc="left")

    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=SHEET_DPI, facecolor="white")
    atomic.write_bytes(out_png, buffer.getvalue())
