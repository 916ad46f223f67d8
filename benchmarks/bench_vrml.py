"""Throughput of read_vrml against a plain line-by-line Python VRML parser.

Generates a BU-4DFE-sized frame (~35k vertices, quads plus some triangles, per-corner UVs,
BU-3DFE Tricorder layout) in a temporary folder, checks both parsers agree, and prints MB/s.

    .venv/bin/python benchmarks/bench_vrml.py [--side 187] [--repeats 5]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from smile_vlm.readers.vrml import read_vrml


def make_vrml(side: int, seed: int = 0) -> str:
    """A side x side vertex grid; cells are quads, every 7th cell split into two triangles."""
    rng = np.random.default_rng(seed)
    rows, cols = np.mgrid[0:side, 0:side]
    vertices = np.stack([cols * 0.75, rows * -0.75, rng.normal(0, 5, rows.shape)], axis=-1).reshape(-1, 3)
    ids = np.arange(side * side).reshape(side, side)
    a, b, c, d = ids[:-1, :-1].ravel(), ids[:-1, 1:].ravel(), ids[1:, 1:].ravel(), ids[1:, :-1].ravel()
    split = np.arange(len(a)) % 7 == 0
    polygons = [[p, q, r, s] for p, q, r, s in zip(a[~split], b[~split], c[~split], d[~split])]
    polygons += [[p, q, r] for p, q, r in zip(a[split], b[split], c[split])]
    polygons += [[p, r, s] for p, r, s in zip(a[split], c[split], d[split])]
    uvs = rng.uniform(0.08, 0.89, size=(int(len(vertices) * 1.04), 2))
    uv_polygons = [[int(rng.integers(len(uvs))) for _ in poly] for poly in polygons]

    def index_block(polys):
        return ",\n          ".join(" ".join(map(str, p)) + " -1" for p in polys)

    def point_block(points, fmt):
        return ",\n            ".join(fmt % tuple(p) for p in points)

    return f"""#VRML V2.0 utf8
#Tricorder Technology plc - 2000
DEF Tricorder_object Transform {{
  children [
    Shape {{
      appearance Appearance {{
        texture ImageTexture {{
          url "000.jpg"
        }}
      }}
      geometry IndexedFaceSet {{
        ccw TRUE
        solid FALSE
        coord Coordinate {{
          point [
            {point_block(vertices, "%.4f %.4f %.4f")}
          ]
        }}
        coordIndex [
          {index_block(polygons)}
        ]
        texCoord TextureCoordinate {{
          point [
            {point_block(uvs, "%.6f %.6f")}
          ]
        }}
        texCoordIndex [
          {index_block(uv_polygons)}
        ]
      }}
    }}
  ]
}}
"""


def naive_read_vrml(path: Path):
    """What a first loader usually looks like: a state machine over lines, floats one by one."""
    vertices, coord_index, uvs, uv_index = [], [], [], []
    target = None
    previous = ""
    with open(path) as stream:
        for line in stream:
            stripped = line.strip()
            if target is None:
                if stripped.startswith("point ["):
                    target = uvs if "TextureCoordinate" in previous else vertices
                elif stripped.startswith("coordIndex ["):
                    target = coord_index
                elif stripped.startswith("texCoordIndex ["):
                    target = uv_index
                elif stripped:
                    previous = stripped
                continue
            if stripped.startswith("]"):
                target = None
                continue
            values = stripped.rstrip(",").replace(",", " ").split()
            if target is vertices or target is uvs:
                target.append([float(v) for v in values])
            else:
                target.extend(int(v) for v in values)

    def fan(index):
        triangles, polygon = [], []
        for i in index + [-1]:
            if i == -1:
                triangles.extend([polygon[0], polygon[k], polygon[k + 1]] for k in range(1, len(polygon) - 1))
                polygon = []
            else:
                polygon.append(i)
        return triangles

    return np.array(vertices), np.array(fan(coord_index)), np.array(uvs), np.array(fan(uv_index))


def best_seconds(function, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--side", type=int, default=187, help="grid side; 187 -> 34 969 vertices")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per parser (best is reported)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "000.wrl"
        path.write_text(make_vrml(args.side))
        megabytes = path.stat().st_size / 1e6
        mesh = read_vrml(path)
        vertices, faces, uvs, face_uv = naive_read_vrml(path)
        assert np.array_equal(mesh.faces, faces) and np.array_equal(mesh.face_uv, face_uv)
        assert np.allclose(mesh.vertices, vertices, atol=1e-4) and np.allclose(mesh.uv, uvs, atol=1e-6)
        results = [
            ("read_vrml (numpy blocks)", best_seconds(lambda: read_vrml(path), args.repeats)),
            ("naive line-by-line Python", best_seconds(lambda: naive_read_vrml(path), args.repeats)),
        ]
    print(f"file: {mesh.n_vertices} vertices, {mesh.n_faces} triangles, {len(mesh.uv)} UVs, {megabytes:.2f} MB")
    print(f"{'parser':<28}{'seconds':>10}{'MB/s':>10}")
    for name, seconds in results:
        print(f"{name:<28}{seconds:>10.4f}{megabytes / seconds:>10.1f}")
    print(f"speed-up: {results[1][1] / results[0][1]:.1f}x")


if __name__ == "__main__":
    main()
