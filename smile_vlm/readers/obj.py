"""Wavefront OBJ reader (candidate container of BP4D and 4DME frames; docs/datasets.md).

A strict reader of our own instead of trimesh: trimesh skips what it cannot parse (a face with
two corners, a cut last line, a damaged token) and accepts index 0, so a damaged frame loaded
with fewer faces and no error. Here every line is accounted for: each line starts with a known
statement, every ``v``/``vt``/``f`` line parses completely, and a failure names the line. Lines of
one kind are converted together in one C call, like the VRML reader (``v``/``vt`` rows by
pandas' C tokenizer, readers/numbers.py, else np.fromstring; faces by np.fromstring), and only a
failure falls back to a line-by-line pass that finds the line to name.

What is read: ``v`` (x y z, optional w or r g b ignored), ``vt`` (u v, optional w ignored),
``f`` with 1-based corners ``a``, ``a/b``, ``a//c`` or ``a/b/c`` (one style per file), polygons
fan-triangulated with their UVs per corner (``face_uv``), and the ``map_Kd`` of the ``mtllib``.
``vn``, ``vp``, ``l``, ``p``, ``o``, ``g``, ``s``, ``usemtl`` and comments are allowed and ignored.

Refused, with the line: a last line without an end of line (a cut file), unknown statements,
non-numeric values, faces with fewer than three corners, index 0 or out of range, negative
(relative) indices, and vertices that no face uses. Scanner exports reference every vertex, so
an unused one means the face list was cut at a line boundary, the one cut the other checks miss.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from smile_vlm.errors import ScanError
from smile_vlm.mesh import Mesh
from smile_vlm.readers import check_values, numbers, read_limited, resolve_texture, scan_texture
from smile_vlm.readers.vrml import fan_positions

_MTLLIB = re.compile(rb"^[ \t]*mtllib[ \t]+(\S[^\r\n]*?)[ \t]*$", re.MULTILINE)
_MAP_KD = re.compile(r"^[ \t]*map_Kd[ \t]+(?:-\S+[ \t]+\S+[ \t]+)*(\S[^\r\n]*?)[ \t]*$", re.MULTILINE)
_INDENTED = re.compile(rb"^[ \t]+", re.MULTILINE)
_VERTEX_LINE = re.compile(rb"^[ \t]*v[ \t]", re.MULTILINE)
_IGNORED = {b"vn", b"vp", b"l", b"p", b"o", b"g", b"s", b"usemtl", b"mtllib"}
# line kinds
_OTHER, _BLANK, _IGNORE, _V, _VT, _F = range(6)
_KEYWORD = {_V: b"v", _VT: b"vt", _F: b"f"}
# numbers per line accepted for each kind, and how many of them are kept
_WIDTHS = {_V: ((3, 4, 6, 7), 3), _VT: ((2, 3), 2)}
_WHITESPACE = np.zeros(256, dtype=bool)
_WHITESPACE[[9, 10, 11, 12, 13, 32]] = True
_PIECE_BYTES = 4 << 20


def read_obj(path: str | Path, *, require_texture: bool = False, max_bytes: int | None = None) -> Mesh:
    """Read an OBJ scan; see the module docstring for what is accepted."""
    path = Path(path)
    return parse_obj(read_limited(path, max_bytes), path, require_texture=require_texture)


def parse_obj(data: bytes, path: str | Path, *, require_texture: bool = False) -> Mesh:
    """Parse OBJ bytes; ``path`` names the file in errors and anchors the material lookup.

    Works on the byte buffer with numpy (line starts, a kind per line, one conversion per run
    of same-kind lines), never with a Python object per line, so that a corrupt file at the
    size limit stays within bounded memory (benchmarks/bench_corrupt_memory.py).
    """
    path = Path(path)
    if not data.strip():
        raise ScanError(path, "no faces (empty file)")
    if not data.endswith(b"\n"):
        last = data.count(b"\n") + 1
        raise ScanError(path, f"truncated: line {last} has no end of line (a cut file?)")
    if b"\n " in data or b"\n\t" in data or data[:1] in (b" ", b"\t"):  # indented lines (rare)
        data = _INDENTED.sub(b"", data)
    lines = _Lines(data, path)
    if not (lines.kinds == _F).any():
        raise ScanError(path, "no faces (no 'f' lines)")
    if not (lines.kinds == _V).any():
        raise ScanError(path, "no vertices (no 'v' lines)")
    vertices = lines.values(_V)
    check_values(vertices, path, "vertex coordinates")
    uv = lines.values(_VT) if (lines.kinds == _VT).any() else None
    if uv is not None:
        check_values(uv, path, "texture coordinates")

    vertex, texture, per_face, has_uv = lines.faces()
    if (per_face < 3).any():
        face = int(np.flatnonzero(per_face < 3)[0])
        raise ScanError(path, f"line {lines.number(_F, face)}: face with {int(per_face[face])} corners (need >= 3)")
    _check_indices(vertex, len(vertices), "vertex", per_face, lines)
    if has_uv:
        _check_indices(texture, 0 if uv is None else len(uv), "texture coordinate", per_face, lines)
    used = np.zeros(len(vertices), dtype=bool)
    used[vertex - 1] = True
    if not used.all():
        first = int(np.flatnonzero(~used)[0])
        raise ScanError(path, f"line {lines.number(_V, first)}: vertex used by no face ({int((~used).sum())} unused): "
                              "a cut or damaged face list")

    positions = fan_positions(np.cumsum(per_face) - per_face, per_face)
    return Mesh(
        vertices=vertices,
        faces=vertex[positions] - 1,
        uv=uv if has_uv else None,
        face_uv=texture[positions] - 1 if has_uv else None,
        texture=material_texture(data, path, require_texture=require_texture),
        source=path,
    )


class _Lines:
    """The lines of an OBJ buffer as numpy arrays: start and end offsets and a kind per line."""

    def __init__(self, data: bytes, path: Path):
        self.data, self.path = data, path
        raw = np.frombuffer(data, dtype=np.uint8)
        self.ends = np.flatnonzero(raw == 10)
        self.starts = np.empty_like(self.ends)
        self.starts[0] = 0
        self.starts[1:] = self.ends[:-1] + 1
        last = len(raw) - 1
        first, second, third = (raw[np.minimum(self.starts + k, last)] for k in range(3))
        sep1 = (second == 32) | (second == 9)
        sep2 = (third == 32) | (third == 9)
        kinds = np.full(len(self.starts), _OTHER, dtype=np.int8)
        kinds[(first == 10) | (first == 13) | (first == ord("#"))] = _BLANK
        kinds[(first == ord("v")) & sep1] = _V
        kinds[(first == ord("v")) & (second == ord("t")) & sep2] = _VT
        kinds[(first == ord("v")) & ((second == ord("n")) | (second == ord("p"))) & sep2] = _IGNORE
        kinds[(first == ord("f")) & sep1] = _F
        kinds[np.isin(first, np.frombuffer(b"lpogs", dtype=np.uint8)) & sep1] = _IGNORE
        for line in np.flatnonzero(kinds == _OTHER):  # usemtl/mtllib lines, or a damaged one
            words = data[self.starts[line]:self.ends[line]].split(None, 1)
            if words and words[0] in _IGNORED:
                kinds[line] = _IGNORE
                continue
            token = words[0][:20].decode("latin-1") if words else ""
            raise ScanError(path, f"line {line + 1}: unknown statement {token!r}")
        self.kinds = kinds
        self._of_kind: dict[int, np.ndarray] = {}

    def of_kind(self, kind: int) -> np.ndarray:
        if kind not in self._of_kind:
            self._of_kind[kind] = np.flatnonzero(self.kinds == kind)
        return self._of_kind[kind]

    def number(self, kind: int, ordinal: int) -> int:
        """1-based file line number of the ordinal-th line of ``kind``."""
        return int(self.of_kind(kind)[ordinal]) + 1

    def runs(self, kind: int):
        """(byte slice, first line, line count) of each run of consecutive ``kind`` lines."""
        lines = self.of_kind(kind)
        breaks = np.flatnonzero(np.diff(lines) != 1) + 1
        for run in np.split(lines, breaks):
            if len(run):
                yield self.data[self.starts[run[0]]:self.ends[run[-1]] + 1], int(run[0]), len(run)

    def error(self, line: int, reason: str) -> ScanError:
        text = self.data[self.starts[line]:self.ends[line]].strip()[:60].decode("utf-8", errors="replace")
        return ScanError(self.path, f"line {line + 1}: {reason}: {text!r}")

    def values(self, kind: int) -> np.ndarray:
        """(n, width) float64 of every ``kind`` line; one conversion per run of lines."""
        keep = _WIDTHS[kind][1]
        keyword = _KEYWORD[kind]
        parts = []
        for chunk, first, count in self.runs(kind):
            # numbers never contain the letters of 'v'/'vt', so the keywords become spaces
            numbers_only = chunk.replace(keyword, b" " * len(keyword))
            rows = numbers.float_rows(numbers_only, keep)  # C tokenizer: exactly `keep` per line
            if rows is not None and len(rows) == count:
                parts.append(rows)
                continue
            try:
                values = np.fromstring(numbers_only, dtype=np.float64, sep=" ")
            except ValueError:
                values = None
            if values is not None and values.size == keep * count:
                parts.append(values.reshape(-1, keep))
            else:
                parts.append(self._values_slow(chunk, first, kind))
        return np.concatenate(parts) if len(parts) > 1 else parts[0]

    def _values_slow(self, chunk: bytes, first: int, kind: int) -> np.ndarray:
        widths, keep = _WIDTHS[kind]
        name = _KEYWORD[kind].decode()
        rows = []
        for offset, match in enumerate(re.finditer(rb"[^\n]*\n", chunk)):
            fields = match.group().split()[1:]
            try:
                row = [float(field) for field in fields]
            except ValueError:
                raise self.error(first + offset, f"'{name}' with a non-numeric value") from None
            if len(row) not in widths:
                raise self.error(first + offset, f"'{name}' with {len(row)} numbers (need {keep})")
            rows.append(row[:keep])
        return np.array(rows, dtype=np.float64).reshape(-1, keep)

    def faces(self) -> tuple[np.ndarray, np.ndarray | None, np.ndarray, bool]:
        """(1-based vertex index per corner, texture index per corner or None, corners per face,
        whether faces carry texture indices); one corner style ('a', 'a/b', 'a//c', 'a/b/c') per file."""
        style = None
        vertex, texture, per_face = [], [], []
        for chunk, first, count in self.runs(_F):
            if style is None:
                words = chunk[:chunk.index(b"\n")].split()
                style = _corner_style(words[1]) if len(words) > 1 else (1, False)
            run = _face_run(chunk, count, style)
            if run is None:
                run = self._faces_slow(chunk, first, style)
            vertex.append(run[0])
            texture.append(run[1])
            per_face.append(run[2])
        join = (lambda parts: np.concatenate(parts) if len(parts) > 1 else parts[0])
        has_uv = style[1]
        return join(vertex), join(texture) if has_uv else None, join(per_face), has_uv

    def _faces_slow(self, chunk: bytes, first: int, style: tuple[int, bool]):
        vertex, texture, per_face = [], [], []
        for offset, match in enumerate(re.finditer(rb"[^\n]*\n", chunk)):
            fields = match.group().split()[1:]
            for token in fields:
                if _corner_style(token) != style:
                    raise self.error(first + offset, f"face corner {token[:20].decode('latin-1')!r} has another "
                                                     "form than the file's first corner")
                parts = token.split(b"/")
                try:
                    vertex.append(int(parts[0]))
                    texture.append(int(parts[1]) if style[1] else 0)
                except ValueError:
                    raise self.error(first + offset, "face with a non-integer index") from None
            per_face.append(len(fields))
        return (np.array(vertex, dtype=np.int64), np.array(texture, dtype=np.int64),
                np.array(per_face, dtype=np.int64))


def _corner_style(token: bytes) -> tuple[int, bool]:
    """(numbers per corner, whether the second number is a texture index) of 'a', 'a/b', 'a//c', 'a/b/c'."""
    parts = token.split(b"/")
    if len(parts) == 1:
        return 1, False
    if len(parts) == 2:
        return 2, True
    if len(parts) == 3 and parts[1] == b"":
        return 2, False
    return 3, True


def _face_run(chunk: bytes, count: int, style: tuple[int, bool]):
    """The fast path over one run of face lines, or None when anything does not add up."""
    per_corner, has_uv = style
    per_face = _words_per_line(chunk, count) - 1  # minus the 'f'
    n_corners = int(per_face.sum())
    slashes = {(1, False): 0, (2, True): 1, (2, False): 2, (3, True): 2}[style]
    if chunk.count(b"/") != n_corners * slashes:
        return None
    text = chunk.replace(b"f", b" ")
    if per_corner == 2 and not has_uv:
        if text.count(b"//") != n_corners:
            return None
        text = text.replace(b"//", b" ")
    try:
        numbers = np.fromstring(text.replace(b"/", b" ") if slashes else text, dtype=np.int64, sep=" ")
    except ValueError:
        return None
    if numbers.size != n_corners * per_corner:
        return None
    return numbers[0::per_corner], numbers[1::per_corner] if has_uv else numbers[:0], per_face


def _words_per_line(chunk: bytes, count: int) -> np.ndarray:
    """Whitespace-separated words on each of the ``count`` lines of ``chunk`` (which ends in a
    newline), counted a few MB at a time so the temporaries stay small however large the file."""
    counts = np.empty(count, dtype=np.int64)
    done = position = 0
    while position < len(chunk):
        end = chunk.find(b"\n", min(position + _PIECE_BYTES, len(chunk) - 1)) + 1
        raw = np.frombuffer(chunk, dtype=np.uint8, count=end - position, offset=position)
        space = _WHITESPACE[raw]
        word_start = ~space
        word_start[1:] &= space[:-1]
        newlines = np.flatnonzero(raw == 10)
        starts = np.concatenate([[0], newlines[:-1] + 1])
        counts[done:done + len(starts)] = np.add.reduceat(word_start, starts, dtype=np.int64)
        done += len(starts)
        position = end
    return counts


def _check_indices(indices: np.ndarray, count: int, what: str, per_face: np.ndarray, lines: _Lines) -> None:
    bad = (indices < 1) | (indices > count)
    if not bad.any():
        return
    corner = int(np.flatnonzero(bad)[0])
    face = int(np.searchsorted(np.cumsum(per_face), corner, side="right"))
    value = int(indices[corner])
    if value == 0:
        why = f"{what} index 0 (OBJ indices start at 1)"
    elif value < 0:
        why = f"relative (negative) {what} index {value} is not supported"
    else:
        why = f"{what} index {value} but there are only {count}"
    raise ScanError(lines.path, f"line {lines.number(_F, face)}: {why}")


def check_ends(head: bytes, tail: bytes, whole: bool, path: Path) -> Path | None:
    """The cheap checks of a frame that is not rendered (index.validate: sampled): not empty, a
    ``v`` line in the head, a last line with its end of line (a cut file has none). Returns the
    texture of its material, or None."""
    if not head.strip():
        raise ScanError(path, "no faces (empty file)")
    if not tail.endswith(b"\n"):
        raise ScanError(path, "truncated: the last line has no end of line (a cut file?)")
    if _VERTEX_LINE.search(head) is None:
        raise ScanError(path, f"no 'v' line in the first {len(head)} bytes" if not whole else "no 'v' lines")
    return material_texture(head, path)


def material_texture(data: bytes, path: Path, *, require_texture: bool = False) -> Path | None:
    """The map_Kd image of the mtllib named in the OBJ text ``data`` (only its head is needed)."""
    match = _MTLLIB.search(data)
    name = None
    if match is not None:
        library = resolve_texture(path.parent, match.group(1).decode("utf-8", "replace"), source=path, must_exist=False)
        if library.is_file():
            text = read_limited(library).decode("utf-8", errors="replace")
            kd = _MAP_KD.search(text)
            name = kd.group(1) if kd else None
    return scan_texture(path, name, require_texture=require_texture,
                        why_none="no texture (no mtllib with a map_Kd image)")
