"""The render job: every sample of one subject drawn from its views (``render_shard``).

A static scan gives its views; a 4D sequence, one dynamic image per view over its sampled
frames (smile_vlm.sequence). The renderer itself lives in smile_vlm.renderer; its names are
importable from here as well.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from smile_vlm import atomic
from smile_vlm.dynamic import approximate_rank_pooling, exact_rank_pooling, sample_frames, to_uint8
from smile_vlm.errors import ScanError
from smile_vlm.mesh import Mesh
from smile_vlm.normalize import canonicalize
from smile_vlm.progress import ProgressLog
from smile_vlm.register import METHODS as REGISTRATION_METHODS
from smile_vlm.renderer import (
    MODES,
    PLATFORMS,
    Renderer,
    light_pose,
    nvidia_gpu_present,
    select_gl_platform,
    split_by_uv,
    vertex_normals,
    view_rotation,
)
from smile_vlm.sequence import KEEP_PARSED_MB, SEQUENCE_CROP_MARGIN, canonicalize_wide, render_sequence

# The renderer's names stay importable from here (the CLI, predict and pretrain import them so).
__all__ = ["MODES", "PLATFORMS", "SEQUENCE_CROP_MARGIN", "Renderer", "ShardJob", "canonicalize_wide", "light_pose",
           "nvidia_gpu_present", "render_shard", "select_gl_platform", "split_by_uv", "subject_rows", "vertex_normals",
           "view_rotation"]

log = logging.getLogger(__name__)


def render_shard(
    manifest_csv: str | Path,
    dataset: str,
    subject: str,
    out_dir: str | Path,
    settings: dict,
    *,
    mesh_reader: Callable[[str], Mesh] | None = None,
    lm3_reader: Callable[[str], dict] | None = None,
    keep_parsed_mb: float = KEEP_PARSED_MB,
) -> None:
    """Render every sample of one subject; 4D samples become one dynamic image per view.

    settings: the complete render section (``settings.complete("render", ...)``, resolved by the
    command): the Renderer's settings, canonicalize's (radius_mm, units, scale) and
      frames    frames sampled uniformly per 4D sequence before rendering (int, default 16, or "all")
      pooling   "approximate" (default) or "exact" rank pooling
      keep_frames  also write each sampled frame's views as <sample_id>_f<frame>_v<view>.png (false)
      nose_smoothing  running-median window (frames) of the nose-tip track of a 4D sequence (5;
                   1 = centre every frame on its own estimate), used with registration "none"
      registration  rigid registration of each frame of a 4D sequence onto its first
                   (smile_vlm.register): "auto" (default), "landmarks", "icp" or "none"
    All frames of a 4D sequence share one image support per view (``dynamic.common_support``), so
    the dynamic image holds facial motion and not the flicker of each frame's crop edge.
    Writes <sample_id>_v<view>.png, rejects.csv (path, reason) and, last, index.csv
    (sample_id, n_frames, images). mesh_reader / lm3_reader replace the readers (tests);
    keep_parsed_mb caps the parsed frames of one sequence held in memory (speed only: the
    images are the same whatever it is; sequence.KEEP_PARSED_MB).
    """
    started = time.perf_counter()
    job = ShardJob(settings, Path(out_dir), mesh_reader or _default_mesh_reader,
                   lm3_reader or _default_lm3_reader, keep_parsed_mb)
    rows = subject_rows(manifest_csv, dataset, subject)
    progress = ProgressLog(log, f"{dataset}/{subject}", rows["sample_id"].nunique(), "samples rendered")
    with Renderer(job.settings) as job.renderer:
        for sample_id, sample in rows.groupby("sample_id", sort=False):
            sample = sample.sort_values("frame", kind="stable")
            if len(sample) == 1:
                views, n_frames = job.render_static(next(sample.itertuples())), 1
            else:
                views, n_frames = job.render_dynamic(sample_id, sample)
            if views is not None:
                job.write_sample(sample_id, views, n_frames)
            progress.step()
    job.finish(f"{dataset}/{subject}", rows["sample_id"].nunique(), time.perf_counter() - started)


def subject_rows(manifest_csv: str | Path, dataset: str, subject: str) -> pd.DataFrame:
    """The manifest rows of one subject of one dataset, frame numbers as integers."""
    manifest = pd.read_csv(manifest_csv, dtype=str, keep_default_na=False)
    rows = manifest[(manifest["dataset"] == dataset) & (manifest["subject"] == str(subject))].copy()
    rows["frame"] = rows["frame"].astype(int)
    return rows


class ShardJob:
    """One render job: its settings, readers and renderer, and what it has written and rejected.

    A file that fails (unreadable, no face in the crop, a bad texture) becomes a reject row and
    the job goes on; GL failures are not caught, as a broken context would reject everything.
    """

    def __init__(self, settings: dict, out_dir: Path, read_mesh, read_lm3, keep_parsed_mb: float):
        self.settings = settings
        self.pool = _pooling(settings["pooling"])
        self.n_sampled = settings["frames"]
        self.keep_frames = bool(settings["keep_frames"])
        self.nose_smoothing = int(settings["nose_smoothing"])
        self.registration = settings["registration"]
        if self.registration not in REGISTRATION_METHODS:
            raise ValueError(f"registration must be one of {list(REGISTRATION_METHODS)}, got {self.registration!r}")
        self.out_dir = out_dir
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.read_mesh, self.read_lm3 = read_mesh, read_lm3
        self.keep_parsed_mb = keep_parsed_mb
        self.renderer: Renderer | None = None
        self.rejects: list[dict] = []
        self.index_rows: list[dict] = []
        self.n_untextured = self.n_sequences = self.n_frames_rendered = 0

    def reject(self, error: Exception, path: str) -> None:
        if isinstance(error, ScanError):
            self.rejects.append({"path": error.path, "reason": error.reason})
        else:  # any per-file failure: reject it, keep the shard going
            self.rejects.append({"path": path, "reason": f"{type(error).__name__}: {error}"})

    def load(self, row) -> Mesh | None:
        """The row's mesh with its landmark nose tip, or None (and a reject row)."""
        try:
            mesh = self.read_mesh(row.mesh_path)
            if row.landmark_path.lower().endswith(".lm3"):
                tip = self.read_lm3(row.landmark_path).get("Nose tip")
                if tip is not None:
                    mesh.landmarks["nose_tip"] = np.asarray(tip, dtype=np.float32)
            return mesh
        except Exception as error:
            self.reject(error, row.mesh_path)
            return None

    def render(self, mesh: Mesh, path: str, wide: bool = False):
        """Views of a static scan, or (views, inside-sphere pixels) of a sequence's frame (``wide``)."""
        try:
            mesh = canonicalize_wide(mesh, self.settings) if wide else canonicalize(mesh, self.settings)
        except Exception as error:
            self.reject(error, path)
            return None
        try:
            views, inside = self.renderer.render_with_support(mesh)
        except ScanError as error:
            self.reject(error, path)
            return None
        self.n_untextured += self.renderer.mode == "textured" and self.renderer.last_mode != "textured"
        return (views, inside) if wide else views

    def render_static(self, row) -> np.ndarray | None:
        mesh = self.load(row)
        return None if mesh is None else self.render(mesh, row.mesh_path)

    def render_dynamic(self, sample_id: str, sample: pd.DataFrame) -> tuple[np.ndarray | None, int]:
        """(one dynamic image per view, frames rendered) of a sequence; (None, 0) when no frame renders."""
        chosen = sample.iloc[sample_frames(len(sample), self.n_sampled)]
        rendered = render_sequence(self, chosen, self.keep_parsed_mb)
        if self.keep_frames:
            for frame, frame_views in rendered:
                for view, image in enumerate(frame_views):
                    atomic.save_image(self.out_dir / f"{sample_id}_f{frame}_v{view}.png", image)
        if not rendered:
            return None, 0
        frames = np.stack([views for _, views in rendered])  # (T, V, H, W, 3)
        self.n_sequences += 1
        self.n_frames_rendered += len(rendered)
        return np.stack([to_uint8(self.pool(frames[:, view])) for view in range(frames.shape[1])]), len(rendered)

    def write_sample(self, sample_id: str, views: np.ndarray, n_frames: int) -> None:
        paths = [self.out_dir / f"{sample_id}_v{view}.png" for view in range(len(views))]
        for path, image in zip(paths, views):
            atomic.save_image(path, image)
        self.index_rows.append({"sample_id": sample_id, "n_frames": n_frames, "images": "|".join(map(str, paths))})

    def finish(self, shard: str, n_samples: int, seconds: float) -> None:
        """Log what the job did; write rejects.csv and, last, index.csv."""
        if self.n_untextured:
            log.warning("%s: %d meshes had no texture and were rendered shaded", shard, self.n_untextured)
        for reject_row in self.rejects:
            log.warning("%s: rejected %s: %s", shard, reject_row["path"], reject_row["reason"])
        atomic.write_csv(self.out_dir / "rejects.csv", pd.DataFrame(self.rejects, columns=["path", "reason"]))
        atomic.write_csv(self.out_dir / "index.csv",
                         pd.DataFrame(self.index_rows, columns=["sample_id", "n_frames", "images"]))
        n_views = sum(len(row["images"].split("|")) for row in self.index_rows)
        log.info("%s: %d of %d samples rendered (%d sequences from %d frames), %d views, %d rejects, %.1f s",
                 shard, len(self.index_rows), n_samples, self.n_sequences, self.n_frames_rendered, n_views,
                 len(self.rejects), seconds)


def _default_mesh_reader(path: str) -> Mesh:
    from smile_vlm.readers import read_mesh

    return read_mesh(path)


def _default_lm3_reader(path: str) -> dict:
    from smile_vlm.readers.bosphorus import read_lm3

    return read_lm3(path)


def _pooling(name: str) -> Callable[[np.ndarray], np.ndarray]:
    if name == "approximate":
        return approximate_rank_pooling
    if name == "exact":
        return exact_rank_pooling
    raise ValueError(f"pooling must be 'approximate' or 'exact', got {name!r}")
