"""Zarr store: exact round trip, atomic packing, refusal of partial stores; the torch Dataset over it."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import zarr
from PIL import Image

from smile_vlm import store
from smile_vlm.data import StoreDataset
from smile_vlm.errors import ScanError

VIEWS = [{"yaw": -30, "pitch": 0}, {"yaw": 0, "pitch": 0}, {"yaw": 30, "pitch": 10}]
RENDER = {"mode": "shaded", "image_size": 16}
HEIGHT, WIDTH = 12, 16  # not square, so a swapped H/W would show
# The top half of every view is a solid class colour (found again on the contact sheet),
# the bottom half random noise (so the round trip is checked on every byte value).
COLOURS = {"anger": (220, 20, 20), "disgust": (20, 200, 20), "fear": (20, 20, 230),
           "neutral": (128, 128, 128), "negative": (220, 20, 20), "surprise": (20, 20, 230),
           "others": (128, 128, 128)}

MANIFEST_COLUMNS = ["dataset", "sample_id", "subject", "sequence", "frame", "label", "labels",
                    "intensity", "mesh_path", "texture_path", "landmark_path", "task", "sex", "race",
                    "onset", "apex", "offset", "aus"]


def sample(sample_id, subject, label, labels=None, intensity=-1, sequence="", frames=(0,), rendered=True):
    return dict(sample_id=sample_id, subject=subject, label=label,
                labels=label if labels is None else labels, intensity=intensity,
                sequence=sequence, frames=frames, rendered=rendered)


def write_inputs(root: Path, dataset: str, samples: list[dict], seed: int = 0):
    """Manifest (one row per frame, frames in the given order) and per-subject render shards
    with real PNGs. Returns (manifest_csv, shard index csvs, {sample_id: images (V,H,W,3)})."""
    rng = np.random.default_rng(seed)
    rows, expected, shards = [], {}, {}
    for s in samples:
        for frame in s["frames"]:
            rows.append({**{c: "" for c in MANIFEST_COLUMNS}, "dataset": dataset,
                         "sample_id": s["sample_id"], "subject": s["subject"], "sequence": s["sequence"],
                         "frame": frame, "label": s["label"], "labels": s["labels"],
                         "intensity": s["intensity"],
                         "mesh_path": f"raw/{s['subject']}/{s['sample_id']}_{frame:03d}.wrl"})
        if not s["rendered"]:
            continue
        shard = root / "renders" / s["subject"]
        shard.mkdir(parents=True, exist_ok=True)
        colour = COLOURS[s["labels"].split("|")[0] or "neutral"]
        images = rng.integers(0, 256, size=(len(VIEWS), HEIGHT, WIDTH, 3), dtype=np.uint8)
        images[:, : HEIGHT // 2] = colour
        names = []
        for view, image in enumerate(images):
            name = f"{s['sample_id']}_v{view}.png"
            Image.fromarray(image).save(shard / name)
            names.append(name)  # relative to the shard folder, as render writes them
        expected[s["sample_id"]] = images
        shards.setdefault(shard, []).append(
            {"sample_id": s["sample_id"], "n_frames": len(s["frames"]), "images": "|".join(names)})
    manifest_csv = root / "manifest.csv"
    pd.DataFrame(rows, columns=MANIFEST_COLUMNS).to_csv(manifest_csv, index=False)
    index_csvs = []
    for shard, entries in shards.items():
        pd.DataFrame(entries).to_csv(shard / "index.csv", index=False)
        index_csvs.append(shard / "index.csv")
    return manifest_csv, index_csvs, expected


STATIC_SAMPLES = [
    sample("F0001_AN01WH", "F0001", "anger", intensity=1),
    sample("F0001_DI04WH", "F0001", "disgust", intensity=4),
    sample("F0001_NE00WH", "F0001", "neutral", intensity=0),  # not in CLASSES -> -1
    sample("M0002_AN02BL", "M0002", "anger", intensity=2, sequence="séq"),  # non-ASCII string
    sample("M0002_DI03BL", "M0002", "disgust", intensity=3),
    sample("M0003_AN01WH", "M0003", "anger", intensity=1),
    sample("M0003_DI02WH", "M0003", "disgust", intensity=2, rendered=False),  # rejected at render
]
CLASSES = ["anger", "disgust", "fear"]
SETTINGS = {"classes": CLASSES, "multi_label": False, "views": VIEWS, "render": RENDER,
            "compression_level": 3}


@pytest.fixture()
def static_store(tmp_path):
    manifest_csv, index_csvs, expected = write_inputs(tmp_path, "bu3dfe", STATIC_SAMPLES)
    out = tmp_path / "store" / "store.zarr"
    store.pack_store(manifest_csv, index_csvs, out, "bu3dfe", SETTINGS)
    return out, expected


def test_round_trip_of_labels_strings_and_images(static_store):
    out, expected = static_store
    table = store.store_table(out)
    assert table["sample_id"].tolist() == ["F0001_AN01WH", "F0001_DI04WH", "F0001_NE00WH",
                                           "M0002_AN02BL", "M0002_DI03BL", "M0003_AN01WH"]
    assert table["subject"].tolist() == ["F0001"] * 3 + ["M0002"] * 2 + ["M0003"]
    assert table["sequence"].tolist() == ["", "", "", "séq", "", ""]
    assert table["label_index"].tolist() == [0, 1, -1, 0, 1, 0]
    assert table["label"].tolist() == ["anger", "disgust", "", "anger", "disgust", "anger"]
    assert table["intensity"].tolist() == [1, 4, 0, 2, 3, 1]
    assert table["source"].iloc[3] == "raw/M0002/M0002_AN02BL_000.wrl"

    root = store.open_store(out)
    np.testing.assert_array_equal(root["labels"][:], [[1, 0, 0], [0, 1, 0], [0, 0, 0],
                                                      [1, 0, 0], [0, 1, 0], [1, 0, 0]])
    assert root["images"].shape == (6, 3, HEIGHT, WIDTH, 3)
    assert root["images"].chunks == (1, 3, HEIGHT, WIDTH, 3)
    for row, sample_id in enumerate(table["sample_id"]):
        np.testing.assert_array_equal(root["images"][row], expected[sample_id])

    attrs = root.attrs.asdict()
    assert attrs["classes"] == CLASSES and attrs["views"] == VIEWS and attrs["render"] == RENDER
    assert attrs["n_samples"] == 6 and attrs["n_missing"] == 1 and attrs["complete"] is True
    assert attrs["kind"] == "static render" and attrs["multi_label"] is False
    # Canonical JSON: sorted keys, no whitespace.
    assert attrs["settings_hash"] == hashlib.sha256(b'{"image_size":16,"mode":"shaded"}').hexdigest()

    missing = pd.read_csv(out.parent / "store_missing.csv")
    assert missing["sample_id"].tolist() == ["M0003_DI02WH"]
    assert missing["reason"].str.startswith("not rendered").all()


def test_multi_label_4d_samples(tmp_path):
    classes = ["positive", "negative", "surprise", "repression", "others"]
    samples = [
        sample("s01_clip1", "s01", "negative", labels="negative|surprise", sequence="clip1",
               frames=(7, 3, 5)),
        sample("s01_clip2", "s01", "surprise", labels="surprise", sequence="clip2", frames=(1, 2)),
        sample("s02_clip1", "s02", "others", labels="others|negative", sequence="clip1", frames=(4,)),
    ]
    manifest_csv, index_csvs, expected = write_inputs(tmp_path, "4dme", samples)
    out = tmp_path / "store.zarr"
    settings = {**SETTINGS, "classes": classes, "multi_label": True}
    store.pack_store(manifest_csv, index_csvs, out, "4dme", settings)

    root = store.open_store(out)
    np.testing.assert_array_equal(root["labels"][:], [[0, 1, 1, 0, 0], [0, 0, 1, 0, 0], [0, 1, 0, 0, 1]])
    assert root["label"][:].tolist() == [1, 2, 4]
    assert root.attrs["kind"] == "dynamic image"
    table = store.store_table(out)
    assert table["n_frames"].tolist() == [3, 2, 1]
    assert table["labels"].tolist() == ["negative|surprise", "surprise", "negative|others"]
    # Mesh paths in frame order even though the manifest listed frames 7, 3, 5.
    assert table["source"].iloc[0] == "|".join(f"raw/s01/s01_clip1_{f:03d}.wrl" for f in (3, 5, 7))
    np.testing.assert_array_equal(root["images"][2], expected["s02_clip1"])


def test_interrupted_pack_leaves_no_store_and_keeps_the_old_one(tmp_path, monkeypatch):
    manifest_csv, index_csvs, expected = write_inputs(tmp_path, "bu3dfe", STATIC_SAMPLES)
    out = tmp_path / "store.zarr"

    real_read, calls = store._read_png, []

    def failing_read(path, expected=None):
        calls.append(path)
        if len(calls) == 8:  # mid-way through the third sample
            raise RuntimeError("killed")
        return real_read(path, expected)

    monkeypatch.setattr(store, "_read_png", failing_read)
    with pytest.raises(RuntimeError, match="killed"):
        store.pack_store(manifest_csv, index_csvs, out, "bu3dfe", SETTINGS)
    assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["manifest.csv", "renders"]
    with pytest.raises(ScanError, match="store.zarr: no Zarr v3 store"):
        store.open_store(out)

    # A re-pack that dies leaves the previous complete store untouched.
    monkeypatch.setattr(store, "_read_png", real_read)
    store.pack_store(manifest_csv, index_csvs, out, "bu3dfe", SETTINGS)
    calls.clear()
    monkeypatch.setattr(store, "_read_png", failing_read)
    with pytest.raises(RuntimeError):
        store.pack_store(manifest_csv, index_csvs, out, "bu3dfe", {**SETTINGS, "classes": ["anger"]})
    assert store.open_store(out).attrs["classes"] == CLASSES


def test_open_store_refuses_incomplete_and_malformed_stores(static_store):
    out, _ = static_store
    root = zarr.open_group(out, mode="r+")
    del root.attrs["complete"]
    with pytest.raises(ScanError) as refused:
        store.open_store(out)
    assert str(refused.value) == f"{out}: incomplete store (no complete attr): packing did not finish"
    with pytest.raises(ScanError, match="incomplete"):
        StoreDataset(out)

    root.attrs["complete"] = True
    del root["label"]
    with pytest.raises(ScanError, match="lacks the 'label' array"):
        store.open_store(out)


def test_pack_rejects_inconsistent_renders(tmp_path):
    manifest_csv, index_csvs, _ = write_inputs(tmp_path, "bu3dfe", STATIC_SAMPLES)
    Image.fromarray(np.zeros((HEIGHT + 1, WIDTH, 3), np.uint8)).save(
        tmp_path / "renders" / "M0002" / "M0002_DI03BL_v1.png")
    with pytest.raises(ScanError, match=r"M0002_DI03BL_v1.png: image shape \(13, 16, 3\)"):
        store.pack_store(manifest_csv, index_csvs, tmp_path / "store.zarr", "bu3dfe", SETTINGS)
    with pytest.raises(ScanError, match="3 images, expected one per view \\(2\\)"):
        store.pack_store(manifest_csv, index_csvs, tmp_path / "store.zarr", "bu3dfe",
                         {**SETTINGS, "views": VIEWS[:2]})
    assert not (tmp_path / "store.zarr").exists()


def test_dataset_in_dataloader_with_two_workers(static_store):
    out, expected = static_store
    table = store.store_table(out)

    default = StoreDataset(out)
    assert default.indices.tolist() == [0, 1, 3, 4, 5]  # the neutral scan has no single label
    assert len(StoreDataset(out, label_mode="multi")) == 5
    with pytest.raises(ValueError, match="no single-label target, e.g. store rows \\[2\\]"):
        StoreDataset(out, indices=[0, 2])

    indices = [5, 1, 3, 0, 4]
    dataset = StoreDataset(out, indices=indices)
    loader = torch.utils.data.DataLoader(dataset, batch_size=2, shuffle=True, num_workers=2,
                                         generator=torch.Generator().manual_seed(3))
    seen = {}
    for batch in loader:
        assert batch["images"].dtype == torch.uint8 and batch["labels"].dtype == torch.float32
        for k, row in enumerate(batch["index"].tolist()):
            seen[row] = (batch["label"][k].item(), batch["labels"][k].tolist(), batch["subject"][k])
            np.testing.assert_array_equal(batch["images"][k].numpy(), expected[table["sample_id"][row]])
    assert seen == {
        5: (0, [1.0, 0.0, 0.0], "M0003"),
        1: (1, [0.0, 1.0, 0.0], "F0001"),
        3: (0, [1.0, 0.0, 0.0], "M0002"),
        0: (0, [1.0, 0.0, 0.0], "F0001"),
        4: (1, [0.0, 1.0, 0.0], "M0002"),
    }


def test_images_loaded_into_memory_are_the_stores_and_respect_the_budget(static_store):
    out, _ = static_store
    indices = [5, 1, 3]
    from_store = StoreDataset(out, indices=indices)
    in_memory = StoreDataset(out, indices=indices)
    assert not in_memory.load_images(max_mb=0) and not in_memory.in_memory
    assert in_memory.load_images(max_mb=64) and in_memory.in_memory
    for item in range(len(indices)):
        expected, got = from_store[item], in_memory[item]
        assert torch.equal(got["images"], expected["images"]) and got["index"] == expected["index"] == indices[item]
