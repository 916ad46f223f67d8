"""ICT-FaceKit as a second face source: real scanned geometry with FACS blendshapes.

Reads the official ``FaceXModel/`` folder (``generic_neutral_mesh.obj``, ``identityNNN.obj``,
ARKit-named expression OBJs, ``vertex_indices.json``). Only the face and head vertices
(0-11247) are kept, converted from centimetres to millimetres. ``IctFaceModel`` offers the
attributes and methods of ``face.FaceModel`` that the mesh layouts use, so
``generate(..., {"face_source": "ict", "ict_dir": ...})`` works for BU-3DFE, BU-4DFE, BP4D
and 4DME (Bosphorus range grids need the procedural grid face).
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from smile_vlm.mesh import Mesh
from smile_vlm.synth.expressions import EMOTIONS
from smile_vlm.synth.face import fan_triangulate
from smile_vlm.synth.motion import apply_pose
from smile_vlm.synth.units import SIDES, parse_unit

FACE_VERTICES = 11248  # vertices 0-11247: face, head and neck
CM_TO_MM = 10.0

# FACS action unit -> (blendshape, weight); "X" means both X_L and X_R (README of the subset). A
# one-sided AU ("L12") uses the side's X_L or X_R only (ICT's _L is the subject's left, +x, as in
# FACS); a shape with no sides (jawOpen, mouthShrugUpper) has no one-sided part.
AU_BLENDSHAPES: dict[int, tuple[tuple[str, float], ...]] = {
    1: (("browInnerUp", 1.0),), 2: (("browOuterUp", 1.0),), 4: (("browDown", 1.0),),
    5: (("eyeWide", 1.0),), 6: (("cheekSquint", 1.0),), 7: (("eyeSquint", 1.0),),
    9: (("noseSneer", 1.0),), 10: (("mouthShrugUpper", 1.0), ("mouthUpperUp", 0.5)),
    12: (("mouthSmile", 1.0),), 14: (("mouthDimple", 1.0),), 15: (("mouthFrown", 1.0),),
    16: (("mouthLowerDown", 1.0),), 17: (("mouthShrugLower", 1.0),), 20: (("mouthStretch", 1.0),),
    23: (("mouthPress", 0.6),), 24: (("mouthPress", 1.0),), 25: (("jawOpen", 0.15),),
    26: (("jawOpen", 0.6),), 27: (("jawOpen", 1.0),), 43: (("eyeBlink", 1.0),), 45: (("eyeBlink", 1.0),),
}

# The six basic emotions as blendshape recipes (EMFACS prototypes, README of the subset).
EMOTION_RECIPES: dict[str, dict[str, float]] = {
    "happiness": {"mouthSmile": 1.0, "cheekSquint": 0.8, "eyeSquint": 0.3, "jawOpen": 0.1},
    "sadness": {"browInnerUp": 1.0, "browDown": 0.3, "mouthFrown": 1.0, "mouthShrugLower": 0.5, "eyeBlink": 0.2},
    "surprise": {"browInnerUp": 1.0, "browOuterUp": 1.0, "eyeWide": 1.0, "jawOpen": 0.6},
    "fear": {"browInnerUp": 1.0, "browOuterUp": 0.5, "browDown": 0.3, "eyeWide": 1.0, "mouthStretch": 1.0, "jawOpen": 0.3},
    "anger": {"browDown": 1.0, "eyeSquint": 0.6, "eyeWide": 0.4, "mouthPress": 0.8, "noseSneer": 0.3, "mouthFrown": 0.3},
    "disgust": {"noseSneer": 1.0, "mouthUpperUp": 0.7, "mouthShrugUpper": 0.5, "mouthFrown": 0.5,
                "mouthLowerDown": 0.4, "cheekSquint": 0.4, "browDown": 0.4},
}

# BU 83-point order (§1.5) from the 68 Multi-PIE landmarks ICT ships (0-based, image-left first).
_BU83_FROM_68 = (
    [39, 38, 38, 37, 36, 41, 41, 40] + [42, 43, 43, 44, 45, 46, 46, 47]
    + [21, 20, 19, 18, 17, 17, 18, 19, 20, 21] + [22, 23, 24, 25, 26, 26, 25, 24, 23, 22]
    + [27, 28, 29, 31, 32, 32, 33, 34, 35, 29, 28, 27]
    + list(range(48, 60)) + list(range(60, 68)) + list(range(1, 16))
)


@dataclass(frozen=True)
class IctBasis:
    neutral: np.ndarray  # (V, 3) mm
    identities: np.ndarray  # (K, V, 3) mm deltas
    shapes: dict[str, np.ndarray]  # blendshape name (both sides) or name_L / name_R -> (V, 3) mm delta
    polygons: tuple[np.ndarray, ...]
    landmarks68: np.ndarray


def _obj_vertices(path: Path) -> np.ndarray:
    lines = [line[2:] for line in path.read_text().splitlines() if line.startswith("v ")]
    return np.array(" ".join(lines).split(), dtype=np.float64).reshape(-1, 3)


def _obj_polygons(path: Path) -> list[np.ndarray]:
    polygons = []
    for line in path.read_text().splitlines():
        if line.startswith("f "):
            polygons.append(np.array([int(c.split("/")[0]) - 1 for c in line.split()[1:]], dtype=np.int64))
    return polygons


@functools.lru_cache(maxsize=2)
def load_basis(ict_dir: str) -> IctBasis:
    """Read the neutral mesh, identity modes and blendshape deltas once per folder."""
    folder = Path(ict_dir)
    neutral_path = folder / "generic_neutral_mesh.obj"
    if not neutral_path.is_file():
        raise FileNotFoundError(f"{neutral_path}: ICT-FaceKit neutral mesh not found")
    full = _obj_vertices(neutral_path)
    neutral = full[:FACE_VERTICES] * CM_TO_MM
    polygons = tuple(p for p in _obj_polygons(neutral_path) if p.max() < FACE_VERTICES)
    identities = np.stack([_obj_vertices(p)[:FACE_VERTICES] * CM_TO_MM - neutral
                           for p in sorted(folder.glob("identity[0-9][0-9][0-9].obj"))]) if any(folder.glob("identity*.obj")) else np.zeros((0,) + neutral.shape)
    names = {name for pairs in AU_BLENDSHAPES.values() for name, _ in pairs} | {n for r in EMOTION_RECIPES.values() for n in r}
    shapes = {}
    for name in sorted(names):
        for suffix in ("", *(f"_{side}" for side in SIDES)):
            path = folder / f"{name}{suffix}.obj"
            if path.is_file():
                delta = _obj_vertices(path)[:FACE_VERTICES] * CM_TO_MM - neutral
                shapes[name] = shapes.get(name, 0.0) + delta
                if suffix:
                    shapes[name + suffix] = delta
    landmarks = np.asarray(json.loads((folder / "vertex_indices.json").read_text())["idx_to_landmark_verts"], dtype=np.int64)
    return IctBasis(neutral, identities, shapes, polygons, landmarks)


@dataclass
class IctFrame:
    vertices: np.ndarray


class IctFaceModel:
    """One ICT identity (random identity weights) with the FaceModel interface of the layouts."""

    def __init__(self, ict_dir: str | Path, rng: np.random.Generator):
        self.basis = load_basis(str(Path(ict_dir).resolve()))
        weights = rng.normal(0.0, 1.0, len(self.basis.identities))
        self.rest_vertices = self.basis.neutral + np.tensordot(weights, self.basis.identities, axes=1) if len(weights) else self.basis.neutral.copy()
        # nose tip at about z = +5, as in BU-3DFE
        self.rest_vertices = self.rest_vertices - [0.0, 0.0, self.rest_vertices[:, 2].max() - 5.0]
        self.polygons = list(self.basis.polygons)
        used = np.unique(np.concatenate(self.polygons))
        self._keep = used  # vertices outside any face polygon (none in practice) are dropped
        remap = -np.ones(FACE_VERTICES, dtype=np.int64)
        remap[used] = np.arange(used.size)
        self.polygons = [remap[p] for p in self.polygons]
        self.rest_vertices = self.rest_vertices[used]
        self.triangles = fan_triangulate(self.polygons)
        self.valid = np.ones(used.size, dtype=bool)
        xy = self.rest_vertices[:, :2]
        self._lo, self._hi = xy.min(0) - 1.0, xy.max(0) + 1.0
        self.uv = (xy - self._lo) / (self._hi - self._lo)  # frontal projection, bottom-left origin
        self.polygon_uv = self.polygons
        self.triangles_uv = self.triangles
        self.bu83 = remap[self.basis.landmarks68[_BU83_FROM_68]]
        self.nose_tip = int(np.argmax(self.rest_vertices[:, 2]))
        self._skin = np.clip(rng.normal([0.8, 0.62, 0.5], 0.05), 0.1, 0.95)
        self._texture_seed = int(rng.integers(2**31))

    def _shape(self, name: str) -> np.ndarray:
        return self.basis.shapes[name][self._keep]

    def blend(self, blendshape_weights: dict[str, float]) -> np.ndarray:
        vertices = self.rest_vertices.copy()
        for name, weight in blendshape_weights.items():
            if weight and name in self.basis.shapes:
                vertices += weight * self._shape(name)
        return vertices

    def deform(self, au_weights: dict[int, float], rng: np.random.Generator | None = None,
               pose_deg=(0.0, 0.0, 0.0), noise_mm: float = 0.0, translation_mm=None) -> IctFrame:
        blend: dict[str, float] = {}
        for key, weight in au_weights.items():
            au, side = parse_unit(key)
            for name, factor in AU_BLENDSHAPES.get(au, ()):
                name = name if side is None else f"{name}_{side}"
                blend[name] = blend.get(name, 0.0) + factor * weight
        vertices = apply_pose(self.blend(blend), pose_deg, translation_mm)
        if noise_mm and rng is not None:
            vertices = vertices + rng.normal(0.0, noise_mm, vertices.shape)
        return IctFrame(vertices)

    def texture(self, size: int) -> np.ndarray:
        """A plain skin texture with low-frequency tint and fine noise (ICT ships none)."""
        rng = np.random.default_rng(self._texture_seed)
        coarse = rng.normal(0.0, 0.03, (8, 8, 3))
        tint = np.kron(coarse, np.ones((size // 8 + 1, size // 8 + 1, 1)))[:size, :size]
        image = self._skin + tint + rng.normal(0.0, 0.015, (size, size, 3))
        return (np.clip(image, 0, 1) * 255).round().astype(np.uint8)

    def frontal_texture(self, size: int) -> tuple[np.ndarray, np.ndarray]:
        uv_top = np.column_stack([self.uv[:, 0], 1.0 - self.uv[:, 1]])
        return self.texture(size), uv_top

    @property
    def n_vertices(self) -> int:
        return int(self.rest_vertices.shape[0])


def emotion_meshes(ict_dir: str | Path, rng: np.random.Generator, intensity: float = 1.0,
                   jitter: float = 0.1) -> dict[str, Mesh]:
    """One random identity showing neutral and the six emotions (README recipes), in mm."""
    model = IctFaceModel(ict_dir, rng)
    meshes = {"neutral": Mesh(model.rest_vertices, model.triangles, uv=model.uv, face_uv=model.triangles)}
    for emotion in EMOTIONS:
        weights = {name: w * intensity * float(np.exp(rng.normal(0.0, jitter))) for name, w in EMOTION_RECIPES[emotion].items()}
        meshes[emotion] = Mesh(model.blend(weights), model.triangles, uv=model.uv, face_uv=model.triangles)
    return meshes
