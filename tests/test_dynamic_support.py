"""Dynamic images of 4D sequences show facial motion, not the flicker of each frame's crop edge.

Real 4D scans (BU-4DFE, BP4D) are independent scans per frame: every frame has its own
triangulation and noise. The sequences here mimic that with the procedural face, re-meshed per
frame (cells split along random diagonals, triangles shuffled, 0.05 mm noise), rendered small
through ``render_shard`` and pooled from the frames it keeps. Each frame carries its noise-free
nose tip as a landmark, so that the frames are centred exactly alike and what is left in the
dynamic image comes from the support and the motion (the geometric nose-tip estimate jitters by a
vertex on a noisy, flat nose tip and shifts the whole face with it).
"""

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from scipy import ndimage

from smile_vlm.dynamic import approximate_rank_pooling, approximate_rank_pooling_weights
from smile_vlm.mesh import Mesh
from smile_vlm.render import render_shard
from smile_vlm.synth.face import FaceModel
from smile_vlm.synth.identity import sample_identity

SIZE = 96  # ~1.9 mm per pixel at the default 90 mm crop
FRAMES = 8
BAND_PX = 3
NOISE_MM = 0.05


def remeshed(frame, rng: np.random.Generator) -> Mesh:
    """The face grid as a new scan: each cell split along a random diagonal, shuffled, noisy."""
    grid, valid = frame.grid, frame.valid
    nose_tip = grid[valid][np.argmax(grid[valid][:, 2])]
    index = -np.ones(valid.shape, dtype=np.int64)
    index[valid] = np.arange(int(valid.sum()))
    cells = valid[:-1, :-1] & valid[:-1, 1:] & valid[1:, :-1] & valid[1:, 1:]
    i, j = np.nonzero(cells)
    a, b, c, d = index[i, j], index[i, j + 1], index[i + 1, j + 1], index[i + 1, j]
    other_diagonal = (rng.random(len(i)) < 0.5)[:, None]
    first = np.where(other_diagonal, np.stack([a, b, c], 1), np.stack([a, b, d], 1))
    second = np.where(other_diagonal, np.stack([a, c, d], 1), np.stack([b, c, d], 1))
    faces = np.concatenate([first, second])
    faces = faces[rng.permutation(len(faces))]
    vertices = grid[valid] + rng.normal(0.0, NOISE_MM, (int(valid.sum()), 3))
    return Mesh(vertices, faces, landmarks={"nose_tip": nose_tip})


def manifest_row(sample_id, frame):
    return {
        "dataset": "toy", "sample_id": sample_id, "subject": "S", "sequence": sample_id, "frame": frame,
        "label": "surprise", "labels": "surprise", "intensity": -1, "mesh_path": f"{sample_id}/{frame}",
        "texture_path": "", "landmark_path": "", "task": "", "sex": "", "race": "", "onset": "",
        "apex": "", "offset": "", "aus": "",
    }


@pytest.fixture(scope="module")
def face():
    return FaceModel(sample_identity(np.random.default_rng(3)), resolution=64)


def dynamic_image(tmp_path, meshes: list[Mesh], mode: str = "shaded") -> tuple[np.ndarray, np.ndarray]:
    """(|dynamic image| per unit of pooling weight, pixels that are surface in any frame) of view 0."""
    pd.DataFrame([manifest_row("seq", t) for t in range(len(meshes))]).to_csv(tmp_path / "m.csv", index=False)
    by_path = {f"seq/{t}": mesh for t, mesh in enumerate(meshes)}
    settings = {"mode": mode, "size": SIZE, "yaws": [0], "frames": "all", "keep_frames": True}
    render_shard(tmp_path / "m.csv", "toy", "S", tmp_path / "out", settings, mesh_reader=by_path.__getitem__)
    frames = np.stack([np.asarray(Image.open(tmp_path / "out" / f"seq_f{t}_v0.png"), dtype=np.float64).mean(-1)
                       for t in range(len(meshes))])
    energy = np.abs(approximate_rank_pooling(frames)) / np.abs(approximate_rank_pooling_weights(len(meshes))).sum()
    return energy, (frames > 0).any(axis=0)


def band_and_interior(surface: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    interior = ndimage.binary_erosion(surface, iterations=BAND_PX)
    return surface & ~interior, interior


@pytest.mark.parametrize("mode", ["shaded", "depth"])
def test_a_remeshed_still_face_gives_a_flat_dynamic_image(tmp_path, face, mode):
    rng = np.random.default_rng(0)
    meshes = [remeshed(face.deform({}), rng) for _ in range(FRAMES)]
    energy, surface = dynamic_image(tmp_path, meshes, mode)
    band, interior = band_and_interior(surface)
    assert interior.sum() > 0.25 * SIZE**2  # the face fills the frame: the bands are meaningful
    # The outer band is no brighter than the interior, up to 0.05 grey levels (uint8 rounding of
    # the frames), and nothing moves anywhere: well under one grey level per unit of pooling weight.
    # Measured: shaded band 0.33, interior 0.48; depth 0.043, 0.038. With a crop of whole triangles
    # per frame (the old renderer) the band was 3.3 (shaded) and 0.91 (depth), 7-25x the interior.
    assert energy[band].mean() <= energy[interior].mean() + 0.05
    assert energy[band].mean() < 1.0 and energy[surface].mean() < 1.0


def test_b_jaw_drop_shows_at_the_mouth_not_along_the_oval(tmp_path, face):
    rng = np.random.default_rng(1)
    meshes = [remeshed(face.deform({26: t / (FRAMES - 1)}), rng) for t in range(FRAMES)]
    energy, surface = dynamic_image(tmp_path, meshes)
    band, interior = band_and_interior(surface)

    # where the mouth is in the image: the nose tip is the image centre (canonical origin)
    rest = face.rest[face.valid]
    nose = rest[np.argmax(rest[:, 2])]
    mouth_below_nose_mm = nose[1] - face.features["mouth_y"]
    pixels_per_unit = (SIZE / 2) * np.sqrt(4.0**2 - 1.0)  # focal length for the default camera_distance 4
    mouth_row = SIZE / 2 + pixels_per_unit * (mouth_below_nose_mm / 90.0) / 4.0
    peak_row, peak_col = np.unravel_index(np.argmax(ndimage.uniform_filter(energy, 5)), energy.shape)
    assert abs(peak_row - mouth_row) < 0.1 * SIZE and abs(peak_col - SIZE / 2) < 0.1 * SIZE

    # Along the oval above the mouth nothing moves: the band there is as quiet as the forehead and
    # cheeks inside it, and far below the mouth. Measured: upper band 0.32, upper interior 0.43,
    # whole band 1.0 against interior 3.2, peak 45. Per-frame crop: 3.6, 0.43, 5.3, 3.1, 88.
    upper = np.arange(SIZE)[:, None] < mouth_row - 0.1 * SIZE
    assert energy[band & upper].mean() <= 1.5 * energy[interior & upper].mean()
    assert energy[band].mean() < 0.5 * energy[interior].mean()
    assert energy[band & upper].mean() < 0.02 * energy.max()
