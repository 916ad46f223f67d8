"""A procedural face driven by FACS action units.

The face is a height field over a regular (row, column) grid cropped by a superellipse:
rows grow with y (row 0 = chin side), columns grow with x. Keeping the grid makes the
Bosphorus range image (.bnt) a direct dump and keeps vertex indices fixed across the frames
of one sequence, so landmarks are vertex indices that move with the expression.

Units are millimetres, the face looks toward +z, y is up and the nose tip is the highest z
(as in BU-3DFE scans). Action units are smooth localized displacement fields added to the
rest shape; an expression is a weighted sum of them, then a small head pose and sensor noise.
A one-sided AU (``"L12"``, ``smile_vlm.synth.units``) is its field faded out across the midline.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from smile_vlm.synth.expressions import ACTION_UNITS
from smile_vlm.synth.expressions import EMOTIONS, expression_weights  # noqa: F401  (see below)
from smile_vlm.synth.identity import Identity, sample_identity
from smile_vlm.synth.landmarks import bosphorus_anchors, bu83_anchors, nearest
from smile_vlm.synth.motion import apply_pose, random_pose  # noqa: F401  (see below)
from smile_vlm.synth.profiles import temporal_profile  # noqa: F401  (see below)
from smile_vlm.synth.units import parse_unit

# EMOTIONS, expression_weights, sample_identity, random_pose and temporal_profile are imported
# here too because the pretraining corpus (smile_vlm.pretrain) reads them as `face.<name>`.

# Width (mm) of the fade between a one-sided AU's side and the other across the midline.
MIDLINE_FADE_MM = 4.0
# Holes of open_triangles: semi-axes (x, y) of an open eye's fissure, and how far AU25-27 push
# the lip band into the head before it counts as an open mouth.
EYE_FISSURE_MM = (10.0, 3.5)
MOUTH_OPENING_MM = 6.0


@dataclass
class FaceFrame:
    """One posed face: grid positions (R, C, 3) plus what the writers need beside them."""

    grid: np.ndarray
    valid: np.ndarray

    @property
    def vertices(self) -> np.ndarray:
        return self.grid[self.valid]


@dataclass
class FaceModel:
    """The rest shape, AU basis, topology, UVs, texture and landmarks of one identity."""

    identity: Identity
    resolution: int = 64
    features: dict = field(init=False)

    def __post_init__(self) -> None:
        ident = self.identity
        cols = int(self.resolution)
        rows = int(round(cols * ident.height / ident.width))
        x = np.linspace(-ident.width / 2, ident.width / 2, cols)
        y = np.linspace(-0.55 * ident.height, 0.45 * ident.height, rows)
        self.x, self.y = np.meshgrid(x, y)  # (rows, cols); row 0 = bottom of the face
        self.rows, self.cols = rows, cols
        self._y0, self._y1 = float(y[0]), float(y[-1])
        xn = self.x / (ident.width / 2)
        yn = (self.y - 0.5 * (y[0] + y[-1])) / (ident.height / 2)
        self.valid = np.abs(xn) ** ident.superellipse + np.abs(yn) ** ident.superellipse <= 1.0
        eye_y = ident.nose_length + 4.0
        self.features = {
            "eye_x": ident.eye_spacing / 2, "eye_y": eye_y, "brow_y": eye_y + ident.brow_height,
            "mouth_y": -ident.nose_length * 0.55 - 12.0, "mouth_x": ident.mouth_width / 2,
            "chin_y": -ident.nose_length * 0.55 - 42.0 + ident.chin, "nose_x": ident.nose_width / 2,
        }
        height = self._height_field(xn)  # also shifts self.y by the resting mouth-corner offset
        self.rest = np.stack([self.x, self.y, height], axis=-1)
        self.rest[..., 2] -= self.rest[..., 2][self.valid].max() - 5.0  # nose tip near z = +5 as in BU-3DFE
        self.au_basis = {au: self._au_field(au) for au in ACTION_UNITS}
        # One side of an AU is its field faded out across the midline, so L + R = the bilateral AU.
        left = 1.0 / (1.0 + np.exp(-self.x / MIDLINE_FADE_MM))
        self.side_weight = {"L": left[..., None], "R": (1.0 - left)[..., None]}
        self._build_topology()
        self._build_landmarks()

    # ----------------------------------------------------------------- geometry
    def _g(self, cx, cy, sx, sy):
        return np.exp(-0.5 * (((self.x - cx) / sx) ** 2 + ((self.y - cy) / sy) ** 2))

    def _sym(self, cx, cy, sx, sy):
        """A Gaussian bump mirrored on both sides of the midline."""
        return self._g(cx, cy, sx, sy) + self._g(-cx, cy, sx, sy)

    def _height_field(self, xn: np.ndarray) -> np.ndarray:
        ident, f = self.identity, self.features
        x, y = self.x, self.y
        yc = y / (ident.height / 2)
        z = -ident.depth * (0.75 * xn**2 + 0.2 * xn**4 + 0.22 * yc**2)
        # nose: a ridge from the bridge (eye level) to the tip at y = 0, widening downward
        along = np.clip(y / f["eye_y"], 0.0, 1.0)
        ridge_width = 5.0 + (1 - along) * (f["nose_x"] * 0.3)
        profile = np.where(y >= 0, ident.nose_height * (1 - 0.75 * along), ident.nose_height * np.exp(-0.5 * (y / 5.5) ** 2))
        profile = np.where(y > f["eye_y"], ident.nose_height * 0.25 * np.exp(-0.5 * ((y - f["eye_y"]) / 10) ** 2), profile)
        z += profile * np.exp(-0.5 * (x / ridge_width) ** 2)
        z += 4.0 * self._g(0.0, 0.0, 5.0, 5.0)  # the tip: keeps it the highest point of every face
        z += 5.0 * self._sym(f["nose_x"] * 0.65, -4.0, 5.0, 4.5)  # alar wings
        # eyes: sockets, eyeballs and lid rims
        z += -14.0 * self._sym(f["eye_x"], f["eye_y"], 15.0, 10.0)
        z += 5.0 * self._sym(f["eye_x"], f["eye_y"], 9.0, 4.5)
        z += 2.0 * self._sym(f["eye_x"], f["eye_y"] + 5.0, 11.0, 2.0)
        z += -3.0 * self._sym(f["eye_x"], f["eye_y"] - 0.5, 11.0, 1.6)  # palpebral fissure
        # brow ridge, cheeks, lips, chin
        z += 6.0 * self._sym(f["eye_x"], f["brow_y"], 22.0, 6.0)
        z += 8.0 * self._sym(f["eye_x"] + 6.0, -10.0, 18.0, 14.0)
        mouth_y, mouth_x = f["mouth_y"], f["mouth_x"]
        z += 6.0 * self._g(0, mouth_y + 4.5, mouth_x * 0.6, 3.5)
        z += 6.5 * self._g(0, mouth_y - 5.0, mouth_x * 0.55, 4.0)
        z += -3.5 * self._g(0, mouth_y, mouth_x * 0.7, 1.3)  # the lip line
        z += -3.0 * self._g(0, mouth_y - 13.0, mouth_x * 0.5, 3.0)  # labiomental fold
        z += 8.0 * self._g(0, f["chin_y"], 18.0, 10.0)
        # the identity's resting mouth-corner height moves the corners before any AU acts
        self._corner_rest = ident.mouth_corner_rest * self._sym(mouth_x, mouth_y, 8.0, 8.0)
        self.y = self.y + self._corner_rest
        return z

    def _au_field(self, au: int) -> np.ndarray:
        """Displacement (R, C, 3) in mm of one AU at intensity 1."""
        f = self.features
        x = self.x
        ex, ey, by = f["eye_x"], f["eye_y"], f["brow_y"]
        mx, my, cy = f["mouth_x"], f["mouth_y"], f["chin_y"]
        side = np.sign(x)
        d = np.zeros(self.x.shape + (3,))

        def add(weight, dx=0.0, dy=0.0, dz=0.0):
            d[..., 0] += dx * weight
            d[..., 1] += dy * weight
            d[..., 2] += dz * weight

        if au == 1:
            add(self._sym(ex - 14, by, 10, 10), dy=8.0, dz=1.0)
            add(self._g(0, by + 22, 20, 2.5), dz=-1.5)  # forehead wrinkle
        elif au == 2:
            add(self._sym(ex + 12, by, 11, 10), dy=8.0)
            add(self._sym(ex, by + 16, 18, 2.5), dz=-1.5)
        elif au == 4:
            w = self._sym(ex - 8, by - 2, 13, 9)
            add(w, dy=-7.0, dz=3.0)
            add(w * -side, dx=4.0)
            add(self._sym(5, by - 4, 2.5, 9), dz=-3.0)  # vertical glabella furrows
        elif au == 5:
            add(self._sym(ex, ey + 3.5, 10, 3.5), dy=3.5, dz=-1.0)
            add(self._sym(ex, ey, 8, 4), dz=1.5)
        elif au == 6:
            add(self._sym(ex + 4, ey - 15, 16, 9), dy=4.0, dz=3.0)
            add(self._sym(ex, ey - 5, 10, 3), dy=2.0)
        elif au == 7:
            add(self._sym(ex, ey - 4, 10, 3), dy=3.0, dz=1.0)
            add(self._sym(ex, ey + 3.5, 10, 3), dy=-1.5)
        elif au == 9:
            add(self._sym(f["nose_x"] * 0.45, 12, 8, 9), dy=4.0, dz=2.0)
            add(self._g(0, ey - 6, 10, 2.0), dz=-2.5)  # wrinkles across the bridge
            add(self._sym(ex - 14, by, 9, 8), dy=-2.5)
        elif au == 10:
            add(self._sym(mx * 0.45, my + 5, 10, 5), dy=7.0, dz=2.5)
            add(self._sym(f["nose_x"] * 0.8, -8, 3, 8), dz=-2.5)  # deeper nasolabial folds
        elif au == 12:
            w = self._sym(mx, my, 11, 9)
            add(w, dy=8.0, dz=-2.0)
            add(w * side, dx=5.0)
            add(self._sym(mx + 10, my + 16, 14, 12), dy=2.5, dz=2.0)
        elif au == 14:
            w = self._sym(mx + 2, my, 6, 6)
            add(w, dz=-3.0, dy=1.0)
            add(w * -side, dx=1.5)
        elif au == 15:
            add(self._sym(mx, my - 2, 9, 9), dy=-8.0, dz=-1.5)
        elif au == 16:
            add(self._sym(mx * 0.35, my - 6, 10, 4), dy=-4.0, dz=1.5)
        elif au == 17:
            add(self._g(0, cy + 8, 16, 10), dy=4.0, dz=3.0)
            add(self._g(0, my - 6, 14, 4), dy=2.0, dz=1.0)
        elif au == 20:
            w = self._sym(mx, my, 10, 10)
            add(w * side, dx=7.0)
            add(w, dy=-1.5, dz=-1.5)
        elif au == 23:
            add(self._sym(mx, my, 10, 8) * -side, dx=6.0)
            add(self._g(0, my, mx, 6), dz=3.0)
        elif au == 24:
            add(self._g(0, my + 4, mx * 0.8, 3), dy=-2.0, dz=-1.0)
            add(self._g(0, my - 5, mx * 0.8, 3), dy=2.0, dz=-1.0)
        elif au == 25:
            add(self._g(0, my + 3, mx * 0.8, 3), dy=1.5)
            add(self._g(0, my - 4, mx * 0.8, 3), dy=-3.0)
            add(self._g(0, my, mx * 0.6, 1.5), dz=-5.0)
        elif au in (26, 27):
            drop = 12.0 if au == 26 else 20.0
            jaw = 1.0 / (1.0 + np.exp(-(my - 0.5 - self.y) / 2.0))
            jaw *= np.exp(-((x / 60.0) ** 4))
            add(jaw, dy=-drop, dz=-0.3 * drop)
            # the stretched band between the lips is the open mouth: push it into the head
            interior = 4 * jaw * (1 - jaw) * np.exp(-((x / (mx * 0.85)) ** 4))
            add(interior, dz=-1.2 * drop)
            if au == 27:
                add(self._sym(mx, my, 10, 10) * -side, dx=3.0)
        elif au in (43, 45):
            add(self._sym(ex, ey + 4.0, 10, 3.0), dy=-4.5, dz=0.5)
        return d

    # ----------------------------------------------------------------- expression
    def unit_field(self, key) -> np.ndarray:
        """Displacement (R, C, 3) of an AU key at weight 1: ``12`` both sides, ``"L12"`` the left."""
        au, side = parse_unit(key)
        field = self.au_basis[au]
        return field if side is None else field * self.side_weight[side]

    def deform(self, au_weights: dict[int, float], rng: np.random.Generator | None = None,
               pose_deg: tuple[float, float, float] = (0.0, 0.0, 0.0),
               noise_mm: float = 0.0, translation_mm=None) -> FaceFrame:
        """Rest shape + weighted AU fields, then head pose (yaw, pitch, roll; shift) and noise."""
        grid = self.rest.copy()
        for au, weight in au_weights.items():
            if weight:
                grid += float(weight) * self.unit_field(au)
        grid = apply_pose(grid, pose_deg, translation_mm)
        if noise_mm and rng is not None:
            grid = grid + rng.normal(0.0, noise_mm, grid.shape)
        return FaceFrame(grid=grid, valid=self.valid)

    def open_triangles(self, au_weights: dict) -> np.ndarray:
        """``triangles`` without the eye fissures and an open mouth, the holes a scanner leaves
        (and ICT-FaceKit's face mesh has): an ellipse per eye that AU5 widens, AU7 narrows and
        AU43/45 close, and the lip band that AU25-27 push more than 6 mm into the head."""
        sides = {}
        for key, weight in au_weights.items():
            au, side = parse_unit(key)
            sides[au] = sides.get(au, 0.0) + float(weight) * (1.0 if side is None else 0.5)
        rest, moved = self.rest[self.valid], np.zeros(int(self.valid.sum()))
        for key, weight in au_weights.items():
            moved += float(weight) * self.unit_field(key)[self.valid][:, 2]
        centre, depth = rest[self.triangles].mean(axis=1), moved[self.triangles].mean(axis=1)
        x, y, f = centre[:, 0], centre[:, 1], self.features
        aperture = np.clip(1.0 - sides.get(43, 0.0) - sides.get(45, 0.0) - 0.5 * sides.get(7, 0.0)
                           + 0.5 * sides.get(5, 0.0), 0.0, 1.5) * EYE_FISSURE_MM[1]
        eye = ((np.abs(x) - f["eye_x"]) / EYE_FISSURE_MM[0]) ** 2 + ((y - f["eye_y"] + 0.5) / max(aperture, 1e-6)) ** 2 < 1
        mouth = (np.abs(x) < f["mouth_x"]) & (np.abs(y - f["mouth_y"]) < 15.0) & (depth < -MOUTH_OPENING_MM)
        return self.triangles[~(eye | mouth)]

    # ----------------------------------------------------------------- topology
    def _build_topology(self) -> None:
        """Polygons over valid grid cells: mostly triangle pairs, some quads and pentagons.

        The mix mirrors BU-3DFE F3D files (triangles with a few quads and pentagons) so the
        readers' fan triangulation is exercised. Every polygon is counter-clockwise seen
        from +z, and a pentagon is ordered so that its fan from the first corner has no
        degenerate triangle.
        """
        grid_index = -np.ones(self.valid.shape, dtype=np.int64)
        grid_index[self.valid] = np.arange(int(self.valid.sum()))
        cell_ok = self.valid[:-1, :-1] & self.valid[:-1, 1:] & self.valid[1:, :-1] & self.valid[1:, 1:]
        polygons: list[list[int]] = []
        skip = np.zeros_like(cell_ok)
        for i, j in zip(*np.nonzero(cell_ok)):
            if skip[i, j]:
                continue
            p00, p01 = grid_index[i, j], grid_index[i, j + 1]
            p10, p11 = grid_index[i + 1, j], grid_index[i + 1, j + 1]
            cell = i * self.cols + j
            if cell % 97 == 0 and j + 2 < self.cols and cell_ok[i, j + 1]:
                p02, p12 = grid_index[i, j + 2], grid_index[i + 1, j + 2]
                polygons.append([p11, p10, p00, p01, p02])
                polygons.append([p02, p12, p11])
                skip[i, j + 1] = True
            elif cell % 17 == 0:
                polygons.append([p00, p01, p11, p10])
            else:
                polygons.append([p00, p01, p11])
                polygons.append([p00, p11, p10])
        used = np.zeros(int(self.valid.sum()), dtype=bool)
        for polygon in polygons:
            used[polygon] = True
        if not used.all():  # isolated valid grid points: drop them so every vertex is referenced
            keep = np.flatnonzero(self.valid.ravel())[used]
            self.valid = np.zeros_like(self.valid)
            self.valid.ravel()[keep] = True
            remap = -np.ones(used.size, dtype=np.int64)
            remap[used] = np.arange(int(used.sum()))
            polygons = [[int(remap[k]) for k in polygon] for polygon in polygons]
        self.polygons = [np.asarray(p, dtype=np.int64) for p in polygons]
        self.triangles = fan_triangulate(self.polygons)
        self._build_uv()

    def _build_uv(self) -> None:
        """Per-corner UVs into a two-view atlas, like the BU-3DFE F3D textures (§1.4).

        The left half of the image is the view of the face's negative-x side, the right half
        the positive-x side stored rotated by 180 degrees. Polygons are assigned to a view by
        their centroid, so vertices on the seam carry two UVs (more UVs than vertices).
        """
        rest_xy = self.rest[self.valid][:, :2]
        x_min, x_max = rest_xy[:, 0].min(), rest_xy[:, 0].max()
        y_min, y_max = rest_xy[:, 1].min(), rest_xy[:, 1].max()
        margin = 12.0
        self.atlas = {"x_left": (x_min - 1, margin), "x_right": (-margin, x_max + 1), "y": (y_min - 1, y_max + 1)}
        left = self._atlas_uv(rest_xy, "left")
        right = self._atlas_uv(rest_xy, "right")
        n = rest_xy.shape[0]
        corner_view_right = []
        for polygon in self.polygons:
            right_side = rest_xy[polygon, 0].mean() >= 0
            corner_view_right.append(np.full(polygon.size, right_side))
        flat_vertex = np.concatenate(self.polygons)
        flat_right = np.concatenate(corner_view_right)
        candidate = flat_vertex + n * flat_right  # index into concat(left, right)
        used, inverse = np.unique(candidate, return_inverse=True)
        self.uv = np.concatenate([left, right])[used].astype(np.float64)
        sizes = np.array([p.size for p in self.polygons])
        self.polygon_uv = np.split(inverse.astype(np.int64), np.cumsum(sizes)[:-1])
        self.triangles_uv = fan_triangulate(self.polygon_uv)

    def _atlas_uv(self, xy: np.ndarray, view: str) -> np.ndarray:
        (y_lo, y_hi) = self.atlas["y"]
        t = (xy[:, 1] - y_lo) / (y_hi - y_lo)
        if view == "left":
            lo, hi = self.atlas["x_left"]
            s = (xy[:, 0] - lo) / (hi - lo)
            return np.stack([0.5 * s, t], axis=1)
        lo, hi = self.atlas["x_right"]
        s = (xy[:, 0] - lo) / (hi - lo)
        return np.stack([1.0 - 0.5 * s, 1.0 - t], axis=1)  # rotated by 180 degrees

    # ----------------------------------------------------------------- texture
    def texture(self, size: int) -> np.ndarray:
        """(size, size, 3) uint8 two-view atlas matching ``self.uv`` (bottom-left UV origin)."""
        px = (np.arange(size) + 0.5) / size
        u, v_top = np.meshgrid(px, px)
        v = 1.0 - v_top  # image row 0 is the top, UV origin is the bottom-left
        left = u < 0.5
        (y_lo, y_hi) = self.atlas["y"]
        lo_l, hi_l = self.atlas["x_left"]
        lo_r, hi_r = self.atlas["x_right"]
        x = np.where(left, lo_l + (u / 0.5) * (hi_l - lo_l), lo_r + ((1.0 - u) / 0.5) * (hi_r - lo_r))
        y = np.where(left, y_lo + v * (y_hi - y_lo), y_lo + (1.0 - v) * (y_hi - y_lo))
        return self.skin_colour(x, y)

    def frontal_texture(self, size: int) -> tuple[np.ndarray, np.ndarray]:
        """A frontal photo-like texture and the (R, C, 2) top-left-origin UV of every grid point.

        The image is the grid upsampled by an integer factor k, and grid point (row, col) sits
        at pixel (1 + k*col, H - 1 - k*row), the relation seen in Bosphorus scans (§4.3); row 0
        is the bottom of the face, so it lands near the bottom of the image.
        """
        k = max(1, int(size) // max(self.rows, self.cols))
        height, width = k * self.rows + 2, k * self.cols + 2
        col, row = np.meshgrid(np.arange(self.cols), np.arange(self.rows))
        uv = np.stack([(1 + k * col) / width, (height - 1 - k * row) / height], axis=-1)
        px, py = np.meshgrid(np.arange(width, dtype=np.float64), np.arange(height, dtype=np.float64))
        dx = self.x[0, 1] - self.x[0, 0]
        y_axis = np.linspace(self._y0, self._y1, self.rows)  # rest rows before the corner offset
        dy = y_axis[1] - y_axis[0]
        x = self.x[0, 0] + (px - 1) / k * dx
        y = y_axis[0] + (height - 1 - py) / k * dy
        return self.skin_colour(x, y), uv

    def skin_colour(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Colour of the rest-shape point (x, y): skin, darker brows, red lips, eyes, blotches."""
        f = self.features
        rng = np.random.default_rng(self.identity.texture_seed)
        rgb = np.broadcast_to(np.asarray(self.identity.skin), x.shape + (3,)).copy()

        def bump(cx, cy, sx, sy, mirrored=True):
            g = np.exp(-0.5 * (((x - cx) / sx) ** 2 + ((y - cy) / sy) ** 2))
            if mirrored:
                g = g + np.exp(-0.5 * (((x + cx) / sx) ** 2 + ((y - cy) / sy) ** 2))
            return np.clip(g, 0, 1)[..., None]

        for _ in range(12):  # a few broad blotches give each subject its own pattern
            cx, cy = rng.uniform(-70, 70), rng.uniform(-90, 80)
            tint = rng.normal(0, 0.04, 3)
            rgb += tint * bump(cx, cy, rng.uniform(8, 25), rng.uniform(8, 25), mirrored=False)[..., 0][..., None]
        rgb = rgb * (1 - 0.15 * bump(f["eye_x"] + 8, -10, 16, 12)) + 0.15 * bump(f["eye_x"] + 8, -10, 16, 12) * np.array([0.85, 0.45, 0.42])
        brow = bump(f["eye_x"], f["brow_y"] + 1, 16, 2.8)
        rgb = rgb * (1 - 0.7 * brow) + 0.7 * brow * np.array([0.18, 0.12, 0.08])
        lips = np.clip(bump(0, f["mouth_y"] + 3.5, f["mouth_x"] * 0.6, 2.8, False) + bump(0, f["mouth_y"] - 4.5, f["mouth_x"] * 0.55, 3.2, False), 0, 1)
        rgb = rgb * (1 - 0.6 * lips) + 0.6 * lips * np.array([0.70, 0.28, 0.28])
        sclera = bump(f["eye_x"], f["eye_y"], 8, 2.2)
        rgb = rgb * (1 - 0.8 * sclera) + 0.8 * sclera * np.array([0.92, 0.90, 0.88])
        iris = bump(f["eye_x"], f["eye_y"], 2.6, 2.2)
        rgb = rgb * (1 - 0.9 * iris) + 0.9 * iris * np.array([0.20, 0.14, 0.10])
        rgb += rng.normal(0, 0.015, rgb.shape)  # fine pore-like noise
        return (np.clip(rgb, 0, 1) * 255).round().astype(np.uint8)

    # ----------------------------------------------------------------- landmarks
    def _build_landmarks(self) -> None:
        rest = self.rest[self.valid]
        # rest positions already include the identity's mouth-corner offset in y
        anchor_xy = bu83_anchors(self.features, self.identity)
        self.bu83 = nearest(rest[:, :2], anchor_xy)
        bos = bosphorus_anchors(self.features)
        bos_index = nearest(rest[:, :2], np.array(list(bos.values())))
        self.bosphorus = dict(zip(bos.keys(), bos_index.tolist()))
        self.nose_tip = int(np.argmax(rest[:, 2]))
        self.bosphorus["Nose tip"] = self.nose_tip

    @property
    def n_vertices(self) -> int:
        return int(self.valid.sum())


def fan_triangulate(polygons) -> np.ndarray:
    """Fan triangulation from each polygon's first corner, as the readers do."""
    triangles = []
    for p in polygons:
        for k in range(1, len(p) - 1):
            triangles.append((p[0], p[k], p[k + 1]))
    return np.asarray(triangles, dtype=np.int64).reshape(-1, 3)

