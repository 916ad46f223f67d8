"""The per-file checks of the index: one mesh (and its landmark file) in, a reason or its texture out.

A parsed mesh must also be a surface and its landmarks must lie on it (readers/sanity.py).

``check_file`` is top level so that worker processes can run it; ``run_checks`` runs a list of
checks in one process or shares them out over worker processes.
"""

from __future__ import annotations

import os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from smile_vlm.errors import ScanError
from smile_vlm.mesh import Mesh
from smile_vlm.readers import check_regular, read_ends, resolve_texture
from smile_vlm.readers.sanity import check_geometry, check_landmarks_on

_HEAD_BYTES = 65536  # the VRML url and the OBJ mtllib sit in the first lines of a file; also the tail read


def check_file(job: tuple) -> tuple[str | None, str, str | None]:
    """Check one mesh (and its landmark file): (mesh error or None, texture path or '', landmark error).

    job = (mesh path, landmark path or '', validate mode, dataset root, per-file byte limit).
    Top level so that worker processes can pickle it. Any exception is turned into a reason:
    a reader bug on one odd file must not stop a 60 000-frame index.
    """
    mesh_path, landmark_path, mode, root, max_bytes = job
    try:
        check_inside(Path(mesh_path), root)
        texture, mesh = _check_mesh(Path(mesh_path), mode, max_bytes)
    except ScanError as err:
        return err.reason, "", None
    except MemoryError:
        return "out of memory while reading (file too large for this machine)", "", None
    except Exception as err:  # noqa: BLE001 - see docstring
        return f"unexpected {type(err).__name__}: {err}", "", None
    landmark_error = None
    if landmark_path:
        try:
            check_inside(Path(landmark_path), root)
            _check_landmarks(Path(landmark_path), mode, max_bytes, mesh)
        except ScanError as err:
            landmark_error = err.reason
        except Exception as err:  # noqa: BLE001
            landmark_error = f"unexpected {type(err).__name__}: {err}"
    return None, texture, landmark_error


def check_inside(path: Path, root: str | Path) -> None:
    """A link is read only when it resolves inside the dataset root (never /dev/zero or ~/.ssh)."""
    if not os.path.islink(path):
        return
    target = os.path.realpath(path)
    top = os.path.realpath(root)
    if os.path.commonpath([top, target]) != top:
        raise ScanError(path, f"link to {target}, outside the dataset root; links are read only inside it")


def _check_mesh(path: Path, mode: str, max_bytes: int) -> tuple[str, Mesh | None]:
    """(texture of a mesh that passes its checks or '', the mesh when it was parsed); a
    ScanError otherwise. A parsed mesh must also be a surface (readers/sanity.py).

    A header check that doubts a file (no header, no coordinate block where expected, a cut
    end) hands it to a full parse, which decides and names the problem: the cheap checks never
    reject a file that parses.
    """
    if mode == "header":
        if check_regular(path, max_bytes) == 0:
            raise ScanError(path, "empty file")
        try:
            return _header_texture(path, max_bytes), None
        except ScanError:
            pass
    from smile_vlm.readers import read_mesh

    mesh = read_mesh(path, max_bytes=max_bytes)
    check_geometry(mesh, path)
    return (str(mesh.texture) if mesh.texture is not None else ""), mesh


def _header_texture(path: Path, max_bytes: int) -> str:
    """The cheap checks of a mesh: header, texture reference and, for text formats, its end."""
    suffix = path.suffix.lower()
    if suffix == ".bnt":
        from smile_vlm.readers.bosphorus import read_bnt_header

        name = read_bnt_header(path, max_bytes=max_bytes).texture_name
        texture = resolve_texture(path.parent, name, source=path, must_exist=False) if name else None
    elif suffix in (".wrl", ".obj"):
        head, tail, whole = read_ends(path, max_bytes, _HEAD_BYTES)
        if suffix == ".wrl":
            from smile_vlm.readers.vrml import check_ends

            name = check_ends(head, tail, whole, path)
            texture = resolve_texture(path.parent, name, source=path, must_exist=False) if name else None
        else:
            from smile_vlm.readers.obj import check_ends

            texture = check_ends(head, tail, whole, path)
    else:
        raise ScanError(path, f"unsupported mesh extension {path.suffix!r}")
    return str(texture) if texture is not None and texture.is_file() else ""


def _check_landmarks(path: Path, mode: str, max_bytes: int, mesh: Mesh | None) -> None:
    """Parsed in full mode, and then held against the scan they belong to (``mesh``, when parsed)."""
    if mode != "full":
        if check_regular(path, max_bytes) == 0:
            raise ScanError(path, "empty landmark file")
        return
    if path.suffix.lower() == ".bnd":
        from smile_vlm.readers.bnd import read_bnd

        indices, xyz = read_bnd(path, max_bytes=max_bytes)
        if mesh is not None:
            check_landmarks_on(mesh, xyz, path, indices=indices)
    elif path.suffix.lower() == ".lm3":
        from smile_vlm.readers.bosphorus import read_lm3

        points = read_lm3(path, max_bytes=max_bytes)
        if mesh is not None and points:
            check_landmarks_on(mesh, np.stack(list(points.values())), path, labels=list(points))


def run_checks(jobs: list, workers: int) -> list:
    """check_file of every job, in order; in ``workers`` processes when there are several."""
    if workers <= 1 or len(jobs) < 2:
        return [check_file(job) for job in jobs]
    with ProcessPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(check_file, jobs, chunksize=max(1, len(jobs) // (workers * 8))))

