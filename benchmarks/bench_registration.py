"""Rigid registration of 4D frames: its time per frame, the render job's CPU with and without it,
and how much per-frame head motion is left in the dynamic images.

    .venv/bin/python benchmarks/bench_registration.py [--resolution 173] [--frames 16]
        [--face-source procedural|ict --ict-dir DIR] [--keep DIR]

Generates one synthetic BU-4DFE subject (6 sequences, one per emotion) with no head motion at all
(``pose_sigma_deg: 0``), at the real frame size by default (173 grid columns: ~35k vertices per
frame), then a copy in which every frame (its VRML and its BND landmarks) is moved by its own
rigid head motion: yaw and pitch uniform in +-4 degrees about the head's centre and a shift
uniform in +-3 mm per axis, drawn independently per frame, then centred on zero over each
sequence. The expression is the same frame for frame in both copies; only the head moves.

Why centred: the head pose of a sequence whose every frame jitters is known only up to the mean
of its jitters (over 16 frames, about 0.6 degrees and 0.4 mm), and registration puts the frames in
that mean pose. At the real frame size the dynamic image holds the scanner noise of every frame
at the pixel scale, so a constant offset that small already decorrelates it: the still copy
turned by a constant 0.5 degrees of yaw, 0.3 of pitch and 0.4 mm per axis (no registration)
correlates with itself far below 1 (printed as "constant offset"). Centring measures what
registration removes, the motion between frames.

For each ``render.registration`` of ``--methods`` (none = the baseline, centring on the smoothed
nose-tip track; auto = the mesh's ICP; landmarks = the BND landmarks alone) it runs the render job (``render_shard``,
default render settings otherwise) on both copies in this process and reports:

- its CPU time (process time: one llvmpipe thread, LP_NUM_THREADS=1, as in parallel jobs;
  reading the VRML included), and the ratio to the baseline's;
- per sequence, the Pearson correlation of the dynamic images (all views' pixels) of the moving
  copy with those of the still copy; 1 = no head motion left; and the mean of each view's own
  correlation (``per_view`` says why both);
- per sequence, the correlation of the still copy's dynamic images with the baseline's (what
  registration does to a sequence without head motion).

Then the registration alone, per frame (``SequenceRegistration.fit`` on already parsed frames of
the moving copy, the reference frame excluded), for landmarks and icp.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

os.environ["LP_NUM_THREADS"] = "1"  # before any GL import
os.environ.setdefault("PYOPENGL_PLATFORM", "osmesa")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

PIVOT_MM = np.array([0.0, 0.0, -90.0])  # the generator's head centre
MAX_ANGLE_DEG, MAX_SHIFT_MM = 4.0, 3.0


def rotation(yaw_deg: float, pitch_deg: float) -> np.ndarray:
    from smile_vlm.register import rotation_from_vector

    return rotation_from_vector(np.radians([0.0, yaw_deg, 0.0])) @ rotation_from_vector(np.radians([pitch_deg, 0.0, 0.0]))


def add_head_motion(still: Path, moving: Path, seed: int) -> None:
    """Copy the corpus, then move each frame's mesh and landmarks by its own random rigid motion,
    the motions of a sequence centred on zero (see the module docstring)."""
    from smile_vlm.readers import read_mesh
    from smile_vlm.readers.bnd import read_bnd
    from smile_vlm.synth import writers

    shutil.copytree(still, moving)
    rng = np.random.default_rng(seed)
    for sequence in sorted({wrl.parent for wrl in moving.glob("*/*/*.wrl")}):
        frames = sorted(sequence.glob("*.wrl"))
        angles = rng.uniform(-MAX_ANGLE_DEG, MAX_ANGLE_DEG, (len(frames), 2))
        shifts = rng.uniform(-MAX_SHIFT_MM, MAX_SHIFT_MM, (len(frames), 3))
        angles, shifts = angles - angles.mean(axis=0), shifts - shifts.mean(axis=0)
        for wrl, angle, shift in zip(frames, angles, shifts):
            turn = rotation(*angle)

            def move(points, turn=turn, shift=shift):
                return (np.asarray(points, np.float64) - PIVOT_MM) @ turn.T + PIVOT_MM + shift

            mesh = read_mesh(wrl)
            writers.write_vrml(wrl, move(mesh.vertices), mesh.faces, mesh.uv, mesh.face_uv, mesh.texture.name)
            bnd = moving / "BU4DFE_BND_V1.1" / wrl.relative_to(moving).with_suffix(".bnd")
            indices, points = read_bnd(bnd)
            writers.write_bnd(bnd, indices, move(points))


def constant_offset_reader(yaw_deg: float, pitch_deg: float, shift_mm: float):
    """A mesh reader that turns and shifts every frame alike."""
    from smile_vlm.readers import read_mesh

    turn = rotation(yaw_deg, pitch_deg)

    def read(path):
        mesh = read_mesh(path)
        mesh.vertices = ((mesh.vertices.astype(np.float64) - PIVOT_MM) @ turn.T + PIVOT_MM + shift_mm).astype(np.float32)
        return mesh

    return read


def dynamic_images(views_dir: Path) -> dict[str, np.ndarray]:
    from PIL import Image

    index = pd.read_csv(views_dir / "index.csv")
    return {row.sample_id: np.stack([np.asarray(Image.open(path), dtype=np.float64) for path in row.images.split("|")])
            for row in index.itertuples()}


def correlation(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(a.ravel(), b.ravel())[0, 1])


def per_view(a: np.ndarray, b: np.ndarray) -> float:
    """The mean over views of each view's correlation: blind to what only rescales one view.

    Each stored view is stretched to 0..255 by its own most extreme pixel (``dynamic.to_uint8``),
    so where one pixel at a lip edge ends a little brighter in one copy, that view's background
    turns a shade darker as a whole, and the correlation over all views together drops while
    each view's image is the same.
    """
    return float(np.mean([correlation(view_a, view_b) for view_a, view_b in zip(a, b)]))


def registration_seconds(manifest: pd.DataFrame, method: str, mm_per_unit: float, radius_mm: float) -> list[float]:
    """Process seconds of ``fit`` per non-reference frame, the frames parsed beforehand."""
    from smile_vlm.normalize import nose_tip
    from smile_vlm.readers import read_mesh
    from smile_vlm.register import SequenceRegistration

    seconds = []
    for _, rows in manifest.groupby("sample_id"):
        registration = SequenceRegistration(method, mm_per_unit, radius_mm)
        for number, row in enumerate(rows.sort_values("frame").itertuples()):
            mesh = read_mesh(row.mesh_path)
            start = time.process_time()
            registration.fit(mesh, nose_tip(mesh), row.landmark_path)
            if number:  # the reference costs only its set-up
                seconds.append(time.process_time() - start)
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--resolution", type=int, default=173, help="grid columns of a frame (173: ~35k vertices)")
    parser.add_argument("--frames", type=int, default=16, help="frames per sequence (all are rendered)")
    parser.add_argument("--face-source", choices=["procedural", "ict"], default="procedural")
    parser.add_argument("--ict-dir", default=None)
    parser.add_argument("--methods", default="none,auto,landmarks", help="registration settings; the first is the baseline")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--keep", default=None, help="keep the corpora and renders in this folder")
    args = parser.parse_args()

    from smile_vlm.index import write_index
    from smile_vlm.normalize import millimetres_per_unit
    from smile_vlm.readers import read_mesh
    from smile_vlm.render import render_shard
    from smile_vlm.settings import section_defaults
    from smile_vlm.synth import generate

    folder = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="bench_registration_"))
    try:
        synth = {"subjects": {"bu4dfe": 1}, "frames": {"bu4dfe": args.frames}, "resolution_4d": args.resolution,
                 "pose_sigma_deg": 0.0, "seed": args.seed, "face_source": args.face_source}
        if args.ict_dir:
            synth["ict_dir"] = args.ict_dir
        manifests = {}
        for copy in ("still", "moving"):
            root = folder / copy
            if not (root / "SYNTHETIC.json").exists():
                if copy == "still":
                    generate("bu4dfe", root, synth)
                else:
                    add_head_motion(folder / "still", root, args.seed + 1)
            manifests[copy], _, _ = write_index("bu4dfe", root, {"validate": "header"}, folder / f"{copy}.csv",
                                                folder / f"{copy}_rejects.csv")
        subject = manifests["still"]["subject"].iloc[0]
        n_vertices = read_mesh(manifests["still"]["mesh_path"].iloc[0]).n_vertices
        methods = args.methods.split(",")
        print(f"1 subject, 6 sequences x {args.frames} frames, {n_vertices} vertices per frame "
              f"({args.face_source} face); motion per frame: yaw, pitch uniform +-{MAX_ANGLE_DEG:g} deg, "
              f"shift uniform +-{MAX_SHIFT_MM:g} mm per axis")

        render = {**section_defaults("render"), "frames": "all"}
        cpu, images = {}, {}
        for method in methods:
            for copy in ("still", "moving"):
                out = folder / f"views_{method}_{copy}"
                shutil.rmtree(out, ignore_errors=True)
                start = time.process_time()
                render_shard(folder / f"{copy}.csv", "bu4dfe", subject, out, {**render, "registration": method})
                cpu[method, copy] = time.process_time() - start
                images[method, copy] = dynamic_images(out)
                rejects = pd.read_csv(out / "rejects.csv")
                if len(rejects):
                    print(f"  {method}/{copy}: {len(rejects)} rejects, e.g. {rejects.iloc[0].tolist()}")

        offset_out = folder / "views_constant_offset"
        shutil.rmtree(offset_out, ignore_errors=True)
        render_shard(folder / "still.csv", "bu4dfe", subject, offset_out, {**render, "registration": "none"},
                     mesh_reader=constant_offset_reader(0.5, 0.3, 0.4))
        offset = dynamic_images(offset_out)

        baseline = methods[0]
        samples = sorted(images[baseline, "still"])
        print("\n| registration | render job CPU, still / moving (s) | x baseline | DI correlation, moving vs still "
              "(min, median over sequences) | still vs baseline still (min) |")
        print("|---|---|---|---|---|")
        for method in methods:
            moving = [correlation(images[method, "moving"][s], images[method, "still"][s]) for s in samples]
            kept = [correlation(images[method, "still"][s], images[baseline, "still"][s]) for s in samples]
            ratio = (cpu[method, "still"] + cpu[method, "moving"]) / (cpu[baseline, "still"] + cpu[baseline, "moving"])
            print(f"| {method} | {cpu[method, 'still']:.1f} / {cpu[method, 'moving']:.1f} | {ratio:.2f} | "
                  f"{min(moving):.3f}, {statistics.median(moving):.3f} | {min(kept):.4f} |")
        for method in methods:
            print(f"  {method}: moving vs still per sequence, all views together: " + ", ".join(
                f"{s.split('_', 1)[1]} {correlation(images[method, 'moving'][s], images[method, 'still'][s]):.3f}"
                for s in samples))
            print(f"  {method}: moving vs still per sequence, mean of the views' own: " + ", ".join(
                f"{s.split('_', 1)[1]} {per_view(images[method, 'moving'][s], images[method, 'still'][s]):.3f}"
                for s in samples))

        print("  constant offset (still copy turned 0.5 / 0.3 deg, shifted 0.4 mm, registration none) vs still: "
              + ", ".join(f"{s.split('_', 1)[1]} {correlation(offset[s], images['none', 'still'][s]):.3f}"
                          for s in samples if ("none", "still") in images))

        mm_per_unit, radius_mm = millimetres_per_unit(render), float(render["radius_mm"])
        print("\nregistration alone, per frame (parsed beforehand; reference frames excluded):")
        for method in ("landmarks", "icp"):
            seconds = registration_seconds(manifests["moving"], method, mm_per_unit, radius_mm)
            print(f"  {method}: median {statistics.median(seconds) * 1e3:.1f} ms, max {max(seconds) * 1e3:.1f} ms "
                  f"over {len(seconds)} frames")
    finally:
        if not args.keep:
            shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
