"""Render throughput on one core: reused renderer vs a naive new-scene-per-view loop; and the
CPU of a whole render job on real-size BU-4DFE frames, each frame parsed once vs twice.

    .venv/bin/python benchmarks/bench_render.py [--meshes 30] [--naive-meshes 5] [--mode shaded]
    .venv/bin/python benchmarks/bench_render.py --shard [--frames-per-sequence 20] [--rounds 2]

Each mesh: canonicalize + upload + 3 views (yaw 0/-30/30) at 224x224 + 3 atomic PNG writes, with
LP_NUM_THREADS=1 (one llvmpipe thread, as in parallel Snakemake jobs). Mesh reading is NOT
included (it depends on the raw format). Prints views/s and a projection for BU-4DFE.

--shard generates one synthetic BU-4DFE subject at the real frame size (6 sequences, ~35k
vertices and ~4.4 MB of VRML per frame) and runs ``render_shard`` on it (config.yaml's render
settings) as the render job does, in rounds that alternate the baseline, every sampled frame
parsed twice (nose-tip pass, then render pass: ``keep_parsed_mb=0``), with the default (parsed
once). Prints each job's CPU time (process time, the job's llvmpipe thread included) and the
part spent reading meshes, and checks that both write the same files byte for byte.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

os.environ["LP_NUM_THREADS"] = "1"  # before any GL import
os.environ.setdefault("PYOPENGL_PLATFORM", "osmesa")

import numpy as np  # noqa: E402

from smile_vlm import atomic  # noqa: E402
from smile_vlm.dynamic import approximate_rank_pooling, to_uint8  # noqa: E402
from smile_vlm.mesh import Mesh  # noqa: E402
from smile_vlm.normalize import canonicalize  # noqa: E402
from smile_vlm.render import Renderer  # noqa: E402
from smile_vlm.settings import complete  # noqa: E402

BU4DFE_SEQUENCES, SAMPLED_FRAMES, VIEWS, CORES = 606, 16, 3, 8


def face_like_mesh(side: int = 187, seed: int = 0) -> Mesh:
    """A range-scan-like face (mm): a height-field dome with a nose, eye sockets and noise; side^2 vertices."""
    rng = np.random.default_rng(seed)
    xs = np.linspace(-62.0, 62.0, side)  # the whole grid stays inside the 90 mm crop
    x, y = np.meshgrid(xs, xs)
    z = -0.006 * (x**2 + 0.6 * y**2) + 28.0 * np.exp(-(x**2 + (y + 5.0) ** 2) / (2 * 11.0**2))
    for eye_x in (-32.0, 32.0):
        z -= 9.0 * np.exp(-((x - eye_x) ** 2 + (y - 28.0) ** 2) / (2 * 10.0**2))
    z += rng.normal(0, 0.2, z.shape)
    vertices = np.stack([x, y, z], -1).reshape(-1, 3)
    ids = np.arange(side * side).reshape(side, side)
    a, b, c, d = ids[:-1, :-1].ravel(), ids[:-1, 1:].ravel(), ids[1:, :-1].ravel(), ids[1:, 1:].ravel()
    faces = np.concatenate([np.stack([a, b, d], 1), np.stack([a, d, c], 1)])
    return Mesh(vertices, faces)


class Clock:
    """Wall time and process CPU time (all threads, llvmpipe's included): on a shared machine
    the CPU-time rate is the honest per-core figure, the wall-time rate the observed one."""

    def __enter__(self):
        self.wall, self.cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc):
        self.wall, self.cpu = time.perf_counter() - self.wall, time.process_time() - self.cpu


def bench_reused(meshes: list[Mesh], settings: dict, out_dir: Path) -> tuple[float, float]:
    renderer = Renderer(settings)
    renderer.render(canonicalize(meshes[0], settings))  # context + shader compilation, once per job
    with Clock() as clock:
        for number, mesh in enumerate(meshes):
            for view, image in enumerate(renderer.render(canonicalize(mesh, settings))):
                atomic.save_image(out_dir / f"reused_{number}_v{view}.png", image)
    renderer.close()
    n_views = len(meshes) * len(renderer.views)
    return n_views / clock.wall, n_views / clock.cpu


def bench_naive(meshes: list[Mesh], settings: dict, out_dir: Path) -> tuple[float, float]:
    """What a first attempt looks like: a new Scene, pyrender Mesh and OffscreenRenderer per view."""
    import pyrender
    import trimesh

    from smile_vlm.render import view_rotation

    size = settings["size"]
    n_views = 0
    clock = Clock().__enter__()
    for number, mesh in enumerate(meshes):
        mesh = canonicalize(mesh, settings)
        for view, yaw in enumerate((0, -30, 30)):
            shape = trimesh.Trimesh(mesh.vertices, mesh.faces, process=False)
            scene = pyrender.Scene(bg_color=[0.0, 0.0, 0.0, 1.0], ambient_light=[0.15, 0.15, 0.15])
            scene.add(pyrender.Mesh.from_trimesh(shape, smooth=True), pose=view_rotation(yaw, 0))
            camera_pose = np.eye(4)
            camera_pose[2, 3] = 4.0
            scene.add(pyrender.PerspectiveCamera(yfov=2 * np.arcsin(0.25), znear=2.9, zfar=5.1), pose=camera_pose)
            scene.add(pyrender.DirectionalLight(color=[1.0, 1.0, 1.0], intensity=3.0), pose=camera_pose)
            renderer = pyrender.OffscreenRenderer(size, size)
            color, _ = renderer.render(scene)
            renderer.delete()
            atomic.save_image(out_dir / f"naive_{number}_v{view}.png", color)
            n_views += 1
    clock.__exit__()
    return n_views / clock.wall, n_views / clock.cpu


def pooling_seconds_per_sequence(size: int, repeats: int = 3) -> float:
    frames = np.random.default_rng(0).integers(0, 256, (SAMPLED_FRAMES, VIEWS, size, size, 3), dtype=np.uint8)
    start = time.perf_counter()
    for _ in range(repeats):
        for view in range(VIEWS):
            to_uint8(approximate_rank_pooling(frames[:, view]))
    return (time.perf_counter() - start) / repeats


def bench_shard(frames_per_sequence: int, rounds: int, corpus: str | None) -> None:
    """CPU of one subject's render job, each sampled frame parsed twice (baseline) or once."""
    import filecmp
    import shutil
    import statistics

    import yaml

    from smile_vlm.index import write_index
    from smile_vlm.readers import read_mesh
    from smile_vlm.render import render_shard
    from smile_vlm.sequence import KEEP_PARSED_MB, mesh_bytes
    from smile_vlm.synth import generate

    config = yaml.safe_load((Path(__file__).resolve().parents[1] / "config.yaml").read_text())
    render = complete("render", config.get("render"))
    folder = Path(corpus) if corpus else Path(tempfile.mkdtemp(prefix="bench_shard_"))
    try:
        root = folder / "bu4dfe"
        if not (root / "SYNTHETIC.json").exists():
            generate("bu4dfe", root, {"subjects": {"bu4dfe": 1}, "frames": {"bu4dfe": frames_per_sequence},
                                      "resolution_4d": 173, "seed": 0})
        manifest, _, _ = write_index("bu4dfe", root, {"validate": "header"}, folder / "manifest.csv",
                                     folder / "rejects.csv")
        subject = manifest["subject"].iloc[0]
        first = read_mesh(manifest["mesh_path"].iloc[0])
        frame_mb = Path(manifest["mesh_path"].iloc[0]).stat().st_size / 1e6
        print(f"subject {subject}: {manifest['sample_id'].nunique()} sequences x {frames_per_sequence} frames, "
              f"{first.n_vertices} vertices and {frame_mb:.2f} MB of VRML per frame; render settings {render}")
        frame_bytes, sampled = mesh_bytes(first), int(render["frames"])
        print(f"a parsed frame holds {frame_bytes / 2**20:.1f} MB: a sequence's {sampled} sampled frames "
              f"{frame_bytes * sampled / 2**20:.0f} MB (kept up to {KEEP_PARSED_MB} MB)")
        cpu = {"parsed twice (baseline)": [], "parsed once": []}
        reading = {name: [] for name in cpu}
        for _ in range(rounds):
            for name, keep_mb in (("parsed twice (baseline)", 0), ("parsed once", None)):
                spent = []

                def timed_reader(path, spent=spent):
                    start = time.process_time()
                    try:
                        return read_mesh(path)
                    finally:
                        spent.append(time.process_time() - start)

                out = folder / ("twice" if keep_mb == 0 else "once")
                shutil.rmtree(out, ignore_errors=True)
                extra = {} if keep_mb is None else {"keep_parsed_mb": keep_mb}
                start = time.process_time()
                render_shard(folder / "manifest.csv", "bu4dfe", subject, out, render, mesh_reader=timed_reader, **extra)
                cpu[name].append(time.process_time() - start)
                reading[name].append((sum(spent), len(spent)))
        names = sorted(p.name for p in (folder / "twice").iterdir())
        assert names == sorted(p.name for p in (folder / "once").iterdir())
        for name in names:
            same = (filecmp.cmp(folder / "twice" / name, folder / "once" / name, shallow=False) if name.endswith(".png")
                    else (folder / "twice" / name).read_text().replace("twice", "X")
                    == (folder / "once" / name).read_text().replace("once", "X"))
            assert same, f"{name} differs between the two runs"
        print(f"both runs wrote the same {len(names)} files, byte for byte")
    finally:
        if not corpus:
            shutil.rmtree(folder, ignore_errors=True)
    print(f"load average: {os.getloadavg()[0]:.2f}; {rounds} rounds, CPU (process) seconds per render job")
    print(f"{'job':<26}{'median CPU s':>13}{'all rounds':>22}{'mesh reads':>12}{'reading CPU s':>15}")
    for name, seconds in cpu.items():
        read_s, n_reads = reading[name][-1]
        print(f"{name:<26}{statistics.median(seconds):>13.2f}{' '.join(f'{v:.2f}' for v in seconds):>22}"
              f"{n_reads:>12}{read_s:>15.2f}")
    before, after = (statistics.median(seconds) for seconds in cpu.values())
    print(f"parsing once saves {1 - after / before:.0%} of the job's CPU ({before / after:.2f}x)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shard", action="store_true", help="time a whole render job on real-size frames instead")
    parser.add_argument("--frames-per-sequence", type=int, default=20, help="--shard: frames of each sequence")
    parser.add_argument("--rounds", type=int, default=2, help="--shard: alternating rounds of the two jobs")
    parser.add_argument("--corpus", help="--shard: generate into (or reuse) this folder and keep it")
    parser.add_argument("--meshes", type=int, default=30, help="meshes for the reused renderer")
    parser.add_argument("--naive-meshes", type=int, default=5, help="meshes for the naive loop")
    parser.add_argument("--mode", default="shaded", choices=["shaded", "depth"])
    parser.add_argument("--size", type=int, default=224)
    args = parser.parse_args()
    if args.shard:
        bench_shard(args.frames_per_sequence, args.rounds, args.corpus)
        return

    settings = complete("render", {"mode": args.mode, "size": args.size, "threads": 1, "radius_mm": 90.0})
    # slightly different scans, as in a real sequence
    meshes = [face_like_mesh(seed=seed) for seed in range(min(args.meshes, 4))]
    meshes = [meshes[i % len(meshes)] for i in range(args.meshes)]
    canonical = canonicalize(meshes[0], settings)
    print(f"mesh: {meshes[0].n_vertices} vertices, {meshes[0].n_faces} faces "
          f"({canonical.n_vertices} vertices after the 90 mm crop); mode {args.mode}; {args.size}px; "
          f"GL {os.environ['PYOPENGL_PLATFORM']}, LP_NUM_THREADS=1")

    with tempfile.TemporaryDirectory() as tmp:
        reused = bench_reused(meshes, settings, Path(tmp))
        naive = bench_naive(meshes[: args.naive_meshes], settings, Path(tmp))
    pooling = pooling_seconds_per_sequence(args.size)
    print(f"load average before: {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores")
    print(f"reused renderer : {reused[0]:6.1f} views/s wall, {reused[1]:6.1f} views per CPU-second "
          "(incl. canonicalize, upload, PNG write)")
    print(f"naive per view  : {naive[0]:6.1f} views/s wall, {naive[1]:6.1f} views per CPU-second "
          f"({reused[1] / naive[1]:.1f}x slower per CPU-second)")
    print(f"approximate pooling: {pooling * 1000:.1f} ms per sequence ({SAMPLED_FRAMES} frames x {VIEWS} views)")

    views = BU4DFE_SEQUENCES * SAMPLED_FRAMES * VIEWS
    render_hours = views / (reused[1] * CORES) / 3600
    pooling_minutes = BU4DFE_SEQUENCES * pooling / CORES / 60
    print(f"projection BU-4DFE ({BU4DFE_SEQUENCES} seq x {SAMPLED_FRAMES} frames x {VIEWS} views = {views} views, "
          f"{CORES} cores, at the CPU-second rate): render {render_hours * 60:.1f} min + pooling {pooling_minutes:.1f} min "
          f"(+ mesh reading, not measured here)")


if __name__ == "__main__":
    main()
