"""Throughput of read_vrml against an independent line-by-line Python VRML parser.

Generates a BU-4DFE-sized frame (~35k vertices, quads plus some triangles, per-corner UVs,
BU-3DFE Tricorder layout) in a temporary folder, checks that the parsers agree, and prints
MB/s of CPU time (process time: the machine is shared, and wall time would also count other
jobs' turns). Parsers run interleaved, so load changes hit all of them alike.

    .venv/bin/python benchmarks/bench_vrml.py [--side 187] [--repeats 15]

Rows: read_vrml as shipped (float rows single-spaced, then through pandas' C tokenizer),
read_vrml with every block through np.fromstring (its general path), and a plain but
reasonably written line-by-line parser (str.split and map(float) per line, fan triangulation
in numpy) that shares no code with the reader. Then the number conversion alone, per
converter, and the load average of the machine during the run.
"""

from __future__ import annotations

import argparse
import csv
import io
import os
import statistics
import tempfile
import time
from pathlib import Path
from unittest import mock

import numpy as np
import pandas as pd

from smile_vlm.readers import numbers
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


def line_by_line_vrml(path: Path):
    """(vertices, triangles, uvs, triangle uv indices) by one pass over the lines of the file."""
    tokens = {"coord": [], "coordIndex": [], "texCoord": [], "texCoordIndex": []}
    target, node = None, None
    with open(path) as stream:
        for line in stream:
            stripped = line.strip()
            if target is None:
                if stripped.startswith("coord Coordinate"):
                    node = "coord"
                elif stripped.startswith("texCoord TextureCoordinate"):
                    node = "texCoord"
                elif stripped.startswith("point ["):
                    target = tokens[node]
                elif stripped.startswith(("coordIndex [", "texCoordIndex [")):
                    target = tokens[stripped.split()[0]]
                continue
            if stripped.startswith("]"):
                target = None
                continue
            target.extend(stripped.replace(",", " ").split())

    def fan(words):
        index = np.array(list(map(int, words)), dtype=np.int64)
        if index[-1] != -1:
            index = np.append(index, -1)
        ends = np.flatnonzero(index == -1)  # every polygon here has >= 3 corners
        starts = np.concatenate([[0], ends[:-1] + 1])
        n_triangles = ends - starts - 2
        first = np.repeat(starts, n_triangles)
        k = np.arange(n_triangles.sum()) - np.repeat(np.cumsum(n_triangles) - n_triangles, n_triangles)
        return np.stack([index[first], index[first + k + 1], index[first + k + 2]], axis=1)

    vertices = np.array(list(map(float, tokens["coord"])), dtype=np.float64).reshape(-1, 3)
    uvs = np.array(list(map(float, tokens["texCoord"])), dtype=np.float64).reshape(-1, 2)
    return vertices, fan(tokens["coordIndex"]), uvs, fan(tokens["texCoordIndex"])


def general_path_read_vrml(path: Path):
    """read_vrml with the C tokenizer switched off: every block through np.fromstring."""
    with mock.patch.object(numbers, "float_rows", lambda block, width, **options: None):
        return read_vrml(path)


def conversion_seconds(data: bytes, repeats: int) -> dict[str, list[float]]:
    """Process time of converting the file's number blocks, without anything else of a reader."""
    from smile_vlm.readers.vrml import _split_blocks

    blocks, _ = _split_blocks(data, Path("000.wrl"))
    coord, uv = data[blocks["coord point"]], data[blocks["texCoord point"]]
    indices = [data[blocks["coordIndex"]], data[blocks["texCoordIndex"]]]

    def whitespace_runs(block: bytes):
        """The tokenizer on the block as written (sep=r"\\s+"), as float_rows did before single-spacing."""
        return pd.read_csv(io.BytesIO(block.replace(b",", b" ")), sep=r"\s+", header=None, dtype=np.float64,
                           engine="c", na_filter=False, quoting=csv.QUOTE_NONE, index_col=False)

    return cpu_seconds({
        "float blocks, pandas C tokenizer on whitespace runs (sep=r'\\s+')":
            lambda: (whitespace_runs(coord), whitespace_runs(uv)),
        "float blocks, single-spaced, pandas C tokenizer (numbers.float_rows)":
            lambda: (numbers.float_rows(coord, 3, commas=True), numbers.float_rows(uv, 2, commas=True)),
        "  of which single-spacing (numbers.single_spaced)":
            lambda: (numbers.single_spaced(coord, commas=True), numbers.single_spaced(uv, commas=True)),
        "float blocks, np.fromstring (numbers.general)":
            lambda: (numbers.general(coord, np.float64), numbers.general(uv, np.float64)),
        "index blocks, np.fromstring (numbers.general, int64)": lambda: [numbers.general(b, np.int64) for b in indices],
    }, repeats)


def float_block_megabytes(data: bytes) -> tuple[float, float]:
    """Size of the two float blocks as written and once single-spaced (what pandas then reads)."""
    from smile_vlm.readers.vrml import _split_blocks

    blocks, _ = _split_blocks(data, Path("000.wrl"))
    spans = [blocks["coord point"], blocks["texCoord point"]]
    written = sum(span.stop - span.start for span in spans)
    spaced = sum(len(numbers.single_spaced(data, True, span.start, span.stop)) for span in spans)
    return written / 1e6, spaced / 1e6


def cpu_seconds(parsers: dict, repeats: int) -> dict[str, list[float]]:
    """Process time of each parser, ``repeats`` rounds, the parsers interleaved in each round."""
    times = {name: [] for name in parsers}
    for _ in range(repeats):
        for name, parse in parsers.items():
            start = time.process_time()
            parse()
            times[name].append(time.process_time() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--side", type=int, default=187, help="grid side; 187 -> 34 969 vertices")
    parser.add_argument("--repeats", type=int, default=15, help="timed rounds (best and median reported)")
    args = parser.parse_args()
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "000.wrl"
        path.write_text(make_vrml(args.side))
        megabytes = path.stat().st_size / 1e6
        mesh = read_vrml(path)
        reference = general_path_read_vrml(path)
        vertices, faces, uvs, face_uv = line_by_line_vrml(path)
        assert np.array_equal(mesh.faces, faces) and np.array_equal(mesh.face_uv, face_uv)
        assert np.array_equal(mesh.vertices, vertices.astype(np.float32))
        assert np.array_equal(mesh.uv, uvs.astype(np.float32))
        assert np.array_equal(mesh.vertices, reference.vertices) and np.array_equal(mesh.uv, reference.uv)
        parsers = {
            "read_vrml (C tokenizer)": lambda: read_vrml(path),
            "read_vrml, np.fromstring only": lambda: general_path_read_vrml(path),
            "line-by-line Python": lambda: line_by_line_vrml(path),
        }
        times = cpu_seconds(parsers, args.repeats)
        conversion = conversion_seconds(path.read_bytes(), args.repeats)
        float_mb, spaced_mb = float_block_megabytes(path.read_bytes())
    print(f"file: {mesh.n_vertices} vertices, {mesh.n_faces} triangles, {len(mesh.uv)} UVs, {megabytes:.2f} MB; "
          f"{args.repeats} interleaved rounds, CPU (process) time; load average before/after "
          f"{load_before:.2f}/{os.getloadavg()[0]:.2f}")
    print(f"{'parser':<32}{'best ms':>9}{'median ms':>11}{'MB/s best':>11}{'MB/s median':>13}")
    for name, seconds in times.items():
        best, median = min(seconds), statistics.median(seconds)
        print(f"{name:<32}{best * 1e3:>9.1f}{median * 1e3:>11.1f}{megabytes / best:>11.1f}{megabytes / median:>13.1f}")
    ours = statistics.median(times["read_vrml (C tokenizer)"])
    baseline = statistics.median(times["line-by-line Python"])
    general = statistics.median(times["read_vrml, np.fromstring only"])
    print(f"speed-up over line-by-line (medians): {baseline / ours:.2f}x; "
          f"over np.fromstring only: {general / ours:.2f}x")
    print(f"targets: >= 200 MB/s median: {'met' if megabytes / ours >= 200 else 'not met'}; "
          f">= 5x line-by-line: {'met' if baseline / ours >= 5 else 'not met'}")
    print(f"float blocks {float_mb:.2f} MB, {spaced_mb:.2f} MB once single-spaced")
    print("\nnumber conversion alone (the floor of any reader built on these converters), median ms:")
    for name, seconds in conversion.items():
        print(f"  {name:<72}{statistics.median(seconds) * 1e3:>7.1f}")


if __name__ == "__main__":
    main()
