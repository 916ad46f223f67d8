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

Zarr and numpy only, no torch: packing (and the workflow that plans it) never loads it. The
torch ``Dataset`` over a store is ``smile_vlm.data.StoreDataset``; the contact sheet is
``smile_vlm.figures.contact_sheet``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import zarr
from PIL import Image
from zarr.codecs import BloscCodec, BloscShuffle

from smile_vlm import atomic
from smile_vlm.errors import ScanError
from smile_vlm.settings import section_defaults

log = logging.getLogger(__name__)
PROGRESS_SECONDS = 10.0  # a progress line at most this often while a large store is written

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
    ``{yaw, pitch}`` in render's order: ``views.render_views``), ``render`` (dict, stored and
    hashed), optional ``compression_level`` (Blosc zstd level, default 3) and ``kind`` (e.g.
    ``"dynamic image"``; by default derived from the frame counts). Also writes ``<out_path parent>/store_missing.csv``.
    """
    manifest_csv, out_path = Path(manifest_csv), Path(out_path)
    classes = list(_require(settings, "classes"))
    views = list(_require(settings, "views"))
    render_settings = dict(_require(settings, "render"))
    multi_label = bool(_require(settings, "multi_label"))
    level = int(settings.get("compression_level", section_defaults("store")["compression_level"]))

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
