"""Peak memory of the index's check of one file, for the worst corrupt inputs we know of.

Each input is checked by ``smile_vlm.index.check_file`` (what ``smile-vlm index`` runs per mesh,
with validate=full and the default per-file limit) in a fresh Python process; the process
reports its peak resident memory (VmHWM) and the reject reason. The baselines, measured in
the same run, are a process that only imports the index and one that reads a valid
BU-4DFE-sized frame. A 30 s timeout guards the FIFO case (before the fix it blocked forever).

    .venv/bin/python benchmarks/bench_corrupt_memory.py [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import struct
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_vrml import make_vrml  # noqa: E402

from smile_vlm.readers import DEFAULT_MAX_FILE_MB  # noqa: E402

CHILD = r"""
import json, sys, time
from smile_vlm.index import check_file
import smile_vlm.readers.bosphorus, smile_vlm.readers.obj, smile_vlm.readers.vrml  # in the baseline too
path, root, limit = sys.argv[1], sys.argv[2], int(sys.argv[3])
start = time.perf_counter()
error = check_file((path, "", "full", root, limit))[0] if path else None
seconds = time.perf_counter() - start
# VmHWM, not ru_maxrss: Linux carries ru_maxrss over from the parent across exec
hwm = [line for line in open("/proc/self/status") if line.startswith("VmHWM:")][0].split()[1]
print(json.dumps({"peak_mb": int(hwm) / 1024, "seconds": seconds, "reject": error}))
"""

LIMIT = int(DEFAULT_MAX_FILE_MB * 2**20)
BELOW_LIMIT = LIMIT - 2**20  # the largest files the limit lets through


def vrml_index_bomb(path: Path) -> None:
    """A VRML just under the limit: three vertices and ~16M corners in valid-looking triangles,
    the last one out of range, so every block is parsed and triangulated before the reject."""
    head = "#VRML V2.0 utf8\nShape { geometry IndexedFaceSet {\ncoord Coordinate { point [ 0 0 0, 1 0 0, 0 1 0 ] }\ncoordIndex [\n"
    line = "0 1 2 -1,\n"
    count = (BELOW_LIMIT - len(head) - 64) // len(line)
    with open(path, "w") as stream:
        stream.write(head)
        stream.write(line * count)
        stream.write("0 1 7 -1\n] } }\n")


def obj_index_bomb(path: Path) -> None:
    """An OBJ just under the limit: three vertices, millions of faces, the last with index 0."""
    head = "v 0 0 0\nv 1 0 0\nv 0 1 0\n"
    line = "f 1 2 3\n"
    with open(path, "w") as stream:
        stream.write(head)
        stream.write(line * ((BELOW_LIMIT - len(head) - 16) // len(line)))
        stream.write("f 1 2 0\n")


def bnt_header(nrows: int, ncols: int, name: bytes = b"x.png") -> bytes:
    return struct.pack("<HHdH", nrows, ncols, -1e9, len(name)) + name + struct.pack("<I", 5 * nrows * ncols)


def bnt_nan_below_limit(path: Path) -> None:
    """A consistent .bnt just under the limit whose valid points hold NaN: read, then rejected."""
    ncols = 1000
    nrows = (BELOW_LIMIT - 64) // (8 * 5 * ncols)
    header = bnt_header(nrows, ncols)
    with open(path, "wb") as stream:
        stream.write(header)
        stream.write(b"\xff" * (8 * 5 * nrows * ncols))  # 0xff..ff is a NaN everywhere


def sparse_bnt(path: Path) -> None:
    """640 MB on paper, a hole on disk, with a header that matches its size."""
    header = bnt_header(4000, 4000)
    with open(path, "wb") as stream:
        stream.write(header)
        stream.truncate(len(header) + 8 * 5 * 4000 * 4000)


def declared_grid_larger_than_file(path: Path) -> None:
    path.write_bytes(bnt_header(20000, 20000) + b"\0" * 4096)  # 16 GB of float64 declared


def truncated_vrml(path: Path) -> None:
    """A valid 5 MB frame cut in its coordIndex block."""
    text = make_vrml(187)
    path.write_text(text[: text.index("coordIndex") + len(text) // 4])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--keep", help="write the inputs here instead of a temporary folder")
    args = parser.parse_args()
    folder = Path(args.keep or tempfile.mkdtemp(prefix="corrupt-memory-"))
    folder.mkdir(parents=True, exist_ok=True)
    valid = folder / "valid.wrl"
    valid.write_text(make_vrml(187))
    inputs = {
        "valid BU-4DFE-sized frame (5 MB)": valid,
        "VRML index bomb (63 MB, last index out of range)": (vrml_index_bomb, "bomb.wrl"),
        "OBJ index bomb (63 MB, last index 0)": (obj_index_bomb, "bomb.obj"),
        ".bnt with NaN at valid points (63 MB)": (bnt_nan_below_limit, "nan.bnt"),
        "sparse .bnt, consistent header (640 MB)": (sparse_bnt, "sparse.bnt"),
        ".bnt declaring a 20000 x 20000 grid (4 KB file)": (declared_grid_larger_than_file, "grid.bnt"),
        "truncated VRML frame": (truncated_vrml, "cut.wrl"),
        "link to /dev/zero named .wrl": ("/dev/zero", "zero.wrl"),
        "FIFO named .wrl": ("fifo", "fifo.wrl"),
    }
    rows = [("import only (baseline)", run("", folder))]
    for name, spec in inputs.items():
        if isinstance(spec, Path):
            path = spec
        else:
            make, filename = spec
            path = folder / filename
            if path.exists() or path.is_symlink():
                path.unlink()
            if make == "/dev/zero":
                path.symlink_to("/dev/zero")
            elif make == "fifo":
                os.mkfifo(path)
            else:
                make(path)
        rows.append((name, run(str(path), folder)))
    print(f"per-file limit {DEFAULT_MAX_FILE_MB} MB (index.max_file_mb); peak = VmHWM of the checking process")
    print("| input | peak MB | above import MB | seconds | reject |")
    print("|---|---|---|---|---|")
    base = rows[0][1]["peak_mb"]
    for name, result in rows:
        reason = result["reject"] or "accepted"
        print(f"| {name} | {result['peak_mb']:.0f} | {max(0.0, result['peak_mb'] - base):.0f} | {result['seconds']:.2f} | {reason[:90]} |")
    if not args.keep:
        for path in folder.iterdir():
            path.unlink()
        folder.rmdir()


def run(path: str, root: Path) -> dict:
    try:
        done = subprocess.run([sys.executable, "-c", CHILD, path, str(root), str(LIMIT)],
                              capture_output=True, text=True, timeout=30, check=True)
    except subprocess.TimeoutExpired:
        return {"peak_mb": float("nan"), "seconds": 30.0, "reject": "TIMEOUT (blocked)"}
    return json.loads(done.stdout.strip().splitlines()[-1])


if __name__ == "__main__":
    main()
