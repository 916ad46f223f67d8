"""Expressions of new scans: raw meshes in, class probabilities and view weights out.

A prediction must see a scan exactly as training saw its store, so nothing about the preparation
is an argument here: the canonicalisation (crop radius, units), the views, the image size, the
frame sampling and the rank pooling are the render settings recorded in the checkpoint
(``final.py``'s deploy section; for a fold model, the attributes of the training store it names).
Every sample goes through ``render.render_shard``, the function the render rule runs, on a
manifest of the given files, so a file renders to the same pixels as it would in a store.

Inputs (``find_samples``): a scan file (``.wrl``, ``.obj``, ``.bnt`` through the dataset readers,
``.ply`` through trimesh), a 4D sequence folder (its numbered mesh files are the frames), or a
folder of either. What a folder of meshes is follows the model: a model trained on dynamic images
reads every folder that holds meshes as one sequence; a model trained on static scans reads every
mesh file as one scan. A Bosphorus ``.lm3`` beside a ``.bnt`` gives the nose tip, as in training.

Zero-shot (``classes`` / ``prompts``): the trained classes are scored against the prompt
embeddings saved in the checkpoint. Other class names or another prompt file are embedded with the
checkpoint's frozen text encoder; a class the prompt file does not describe gets the file's
templates filled with its name (CLIP's zero-shot recipe).

The model may also be a pretraining's ``vision.pt`` (``smile_vlm.wise.checkpoint_of``: the
pretrained model before any fine-tuning, rendered as its corpus was; name the classes), and a
fine-tuned model may be mixed with its pretraining (WiSE-FT, ``wise_alpha``).

Output per sample: the probabilities softmax(s x cosine) over the classes, with s the logit scale
the model was trained with (1/tau, as evaluation's multi-label decision), the top class (the
zero-shot prediction evaluation scores), the fusion's learned weight of every view (SMILE-VLM,
Eq. 7) and, for 4D, the frame numbers that entered the dynamic image.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np
import pandas as pd

from smile_vlm import atomic
from smile_vlm.errors import ScanError
from smile_vlm.mesh import Mesh
from smile_vlm.readers import MESH_EXTENSIONS
from smile_vlm.settings import DEFAULT_PREDICT, PREDICT_KINDS

log = logging.getLogger(__name__)

SCAN_EXTENSIONS = MESH_EXTENSIONS + (".ply",)
DYNAMIC_KIND = "dynamic image"
INPUT_KINDS = PREDICT_KINDS  # the schema's predict.kind
# Render settings that change how fast a render runs, not its pixels.
RUNTIME_RENDER_KEYS = ("backend", "threads", "keep_frames")
DEFAULT_CHUNK = 16  # samples rendered per render_shard call (one GL context each)


@dataclass
class Sample:
    """One thing to classify: a static scan (one frame) or a 4D sequence (numbered frames)."""

    name: str
    path: Path
    frames: list[tuple[int, Path]]
    problems: list[str] = field(default_factory=list)  # files of the sample left out, with reasons


# --------------------------------------------------------------------------- inputs

def read_scan(path: str | Path) -> Mesh:
    """A mesh through the dataset readers, or a ``.ply`` through trimesh."""
    path = Path(path)
    if path.suffix.lower() != ".ply":
        from smile_vlm.readers import read_mesh

        return read_mesh(path)
    import trimesh

    try:
        loaded = trimesh.load(path, file_type="ply", process=False, force="mesh")
    except Exception as err:  # trimesh raises many types on broken files
        raise ScanError(path, f"PLY parse failed: {type(err).__name__}: {err}") from None
    faces = np.asarray(getattr(loaded, "faces", np.empty((0, 3))))
    vertices = np.asarray(getattr(loaded, "vertices", np.empty((0, 3))))
    if len(faces) == 0 or len(vertices) == 0:
        raise ScanError(path, "no faces: a point cloud or empty file (a triangle mesh is needed)")
    if not np.isfinite(vertices).all():
        raise ScanError(path, "non-finite (NaN or inf) vertex coordinates")
    return Mesh(vertices=vertices, faces=faces, source=path)


def _is_scan(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in SCAN_EXTENSIONS


def _sequence(folder: Path, name: str) -> Sample:
    """The numbered scans of one folder as frames (ordered by number, as the index orders them)."""
    from smile_vlm.readers.names import frame_number

    frames: dict[int, Path] = {}
    problems = []
    for path in sorted(p for p in folder.iterdir() if _is_scan(p)):
        try:
            number = frame_number(path.name)
        except ScanError as err:
            problems.append(str(err))
            continue
        if number in frames:
            problems.append(f"{path}: duplicate frame {number} (also {frames[number].name})")
            continue
        frames[number] = path
    return Sample(name, folder, sorted(frames.items()), problems)


def subject_folders(root: str | Path) -> list[str]:
    """Names of the subfolders of ``root`` with a scan anywhere below (the workflow's predict jobs)."""
    return sorted(folder.name for folder in Path(root).iterdir()
                  if folder.is_dir() and any(_is_scan(path) for path in folder.rglob("*")))


def find_samples(inputs: Iterable[str | Path], sequences: bool) -> list[Sample]:
    """The samples of the given files and folders (see the module doc); a missing path raises."""
    samples = []
    for given in map(Path, inputs):
        if not given.exists():
            raise ScanError(given, "no such file or folder")
        if given.is_file():
            if given.suffix.lower() not in SCAN_EXTENSIONS:
                raise ScanError(given, f"unsupported scan extension {given.suffix!r} "
                                       f"(expected {', '.join(SCAN_EXTENSIONS)}, or a folder)")
            samples.append(Sample(str(given), given, [(0, given)]))
            continue
        found = []
        if sequences:
            for folder in [given, *sorted(p for p in given.rglob("*") if p.is_dir())]:
                if any(_is_scan(p) for p in folder.iterdir()):
                    found.append(_sequence(folder, str(folder)))
        else:
            found = [Sample(str(p), p, [(0, p)]) for p in sorted(given.rglob("*")) if _is_scan(p)]
        if not found:
            raise ScanError(given, f"no scans ({', '.join(SCAN_EXTENSIONS)}) in this folder or below")
        samples += found
    return samples


# --------------------------------------------------------------------------- the model

def _state(model_path) -> dict:
    from smile_vlm.wise import checkpoint_of, is_pretraining, torch_file

    path = Path(model_path)
    state = torch_file(path, "model file not found", "checkpoint")
    if is_pretraining(state):  # a pretraining's vision.pt: the pretrained model, asked any prompts
        return checkpoint_of(state, path)
    needed = ("model", "variant", "settings", "classes", "n_views", "text_dim")
    if not isinstance(state, dict) or any(key not in state for key in needed):
        raise ScanError(path, "not a trained smile-vlm model (train or final-model writes one) nor a pretraining's vision.pt")
    return state


def _preparation(state: dict, model_path) -> dict:
    """The deploy section, or for a fold model the same facts read from its training store."""
    if "deploy" in state:
        return state["deploy"]
    from smile_vlm.store import open_store

    store_path = state.get("train_store")
    if not store_path or not Path(store_path).exists():
        raise ScanError(model_path, f"a fold model needs its training store {store_path!r} for the render "
                                    "settings; predict with the deployable model (final/<variant>/model.pt)")
    root = open_store(store_path)
    attrs = root.attrs.asdict()
    return {"render": attrs["render"], "kind": attrs.get("kind", ""), "dataset": attrs["dataset"],
            "settings_hash": attrs["settings_hash"], "image_size": int(root["images"].shape[2])}


def prompts_for(classes: list[str], prompt_name) -> dict[str, list[str]]:
    """Prompts of each class from a prompt file; classes it lacks get its templates with their name."""
    import yaml

    from smile_vlm.prompts import load_prompts, prompt_file

    path = prompt_file(prompt_name)
    known = load_prompts(prompt_name)
    templates = (yaml.safe_load(path.read_text(encoding="utf-8")) or {}).get("templates") or []
    prompts = {}
    for name in classes:
        if name in known:
            prompts[name] = known[name]
        elif templates:
            prompts[name] = [template.format(name.replace("_", " ")) for template in templates]
        else:
            raise ScanError(path, f"no prompts for class {name!r} and no templates to make them")
    return prompts


class Predictor:
    """A trained model loaded once, with the render settings and class embeddings it was made with."""

    def __init__(self, model_path, *, classes: list[str] | None = None, prompts: str | None = None,
                 device: str = "cpu", batch_size: int = 32, chunk: int = DEFAULT_CHUNK, units: str | None = None,
                 wise_alpha: float | None = None):
        import torch

        from smile_vlm.augment import Augmenter
        from smile_vlm.evaluate import decision_scale
        from smile_vlm.models import image_input
        from smile_vlm.settings import complete
        from smile_vlm.wise import load_model
        from smile_vlm.views import render_views, view_names

        self.model_path = Path(model_path)
        state = _state(self.model_path)
        self.state = state
        self.preparation = _preparation(state, self.model_path)
        render = complete("render", self.preparation["render"])
        if units is not None:
            render["units"] = units
        self.render_settings = render
        self.views = [{"yaw": float(v["yaw"]), "pitch": float(v["pitch"])} for v in state["views"]]
        rendered_views = [{"yaw": float(v["yaw"]), "pitch": float(v["pitch"])} for v in render_views(render)]
        if rendered_views != self.views or len(self.views) != int(state["n_views"]):
            raise ScanError(self.model_path, f"the checkpoint's render settings make views {rendered_views}, "
                                             f"but the model was trained on {self.views} ({state['n_views']} views)")
        self.view_names = view_names(self.views)
        self.sequences = self.preparation.get("kind") == DYNAMIC_KIND
        self.multi_label = bool(state.get("multi_label", False))
        evaluate = complete("evaluate", state["settings"].get("evaluate"))
        self.multilabel_rule = self.preparation.get("multilabel_rule", evaluate["multilabel_rule"])
        self.device = torch.device(device)
        self.batch_size = int(batch_size)
        self.chunk = max(1, int(chunk))

        if wise_alpha is not None and not state["classes"]:
            raise ScanError(self.model_path, "a pretraining is no fine-tuned model to mix: leave out the WiSE-FT alpha")
        self.model = load_model(self.model_path, state, self.device, wise_alpha)
        self.score_scale = decision_scale(self.model)
        # FACET-VLM pools its views uniformly: only SMILE-VLM's fusion has weights worth reporting.
        self.learns_view_weights = bool(getattr(self.model, "learns_view_weights", True))
        size, mean, std = image_input(self.model)
        self.augmenter = Augmenter(size, None, mean, std)
        self.classes, class_emb = self._class_embeddings(classes, prompts)
        self.class_emb = class_emb.to(self.device)

    def _class_embeddings(self, classes, prompt_name):
        trained = list(self.state["classes"])
        if classes is not None and len(classes) < 2:
            raise ScanError("--classes", "name at least two classes to choose between")
        if classes is not None and len(set(classes)) != len(classes):
            raise ScanError("--classes", f"a class is named twice in {classes}")
        saved = self.preparation.get("class_embeddings")
        if saved is not None and prompt_name is None and (classes is None or list(classes) == trained):
            return trained, saved.float()
        classes = list(classes or trained)
        if not classes:
            raise ScanError("--classes", f"{self.model_path} is a pretraining, trained on no classes: name the classes to score")
        settings = self.state["settings"]
        prompts = prompts_for(classes, prompt_name or settings["prompts"]["name"])
        from smile_vlm.models.encoders import load_text_encoder
        from smile_vlm.prompts import TextBank

        encoder = load_text_encoder((settings.get("encoders") or {}).get("text"))
        bank = TextBank(encoder, prompts, classes)
        if int(bank.dim) != int(self.state["text_dim"]):
            raise ScanError(self.model_path, f"the text encoder gives {bank.dim}-d embeddings, the model "
                                             f"was trained against {self.state['text_dim']}-d ones")
        return classes, bank.class_embeddings()

    # ----------------------------------------------------------------------- rendering

    def render(self, samples: list[Sample], workdir: Path) -> dict[int, tuple[np.ndarray | None, list[int], list[str]]]:
        """position -> (uint8 views (V, H, W, 3) or None, frame numbers used, reasons) via render_shard."""
        from smile_vlm.dynamic import sample_frames
        from smile_vlm.render import render_shard

        rows, chosen = [], {}
        for position, sample in enumerate(samples):
            if not sample.frames:
                continue
            picked = [sample.frames[i] for i in sample_frames(len(sample.frames), self.render_settings["frames"])]
            chosen[position] = picked
            for number, path in sample.frames:
                rows.append({"dataset": "predict", "sample_id": f"s{position:06d}", "subject": "input",
                             "frame": number, "mesh_path": str(path), "landmark_path": _landmarks(path)})
        out = {}
        if rows:
            workdir.mkdir(parents=True, exist_ok=True)
            manifest = workdir / "manifest.csv"
            pd.DataFrame(rows).to_csv(manifest, index=False)
            render_shard(manifest, "predict", "input", workdir / "views", self.render_settings, mesh_reader=read_scan)
            index = pd.read_csv(workdir / "views" / "index.csv", dtype=str, keep_default_na=False)
            rejects = pd.read_csv(workdir / "views" / "rejects.csv", dtype=str, keep_default_na=False)
            reasons = dict(zip(rejects["path"], rejects["reason"]))
            images = {row.sample_id: row.images.split("|") for row in index.itertuples()}
            for position, picked in chosen.items():
                failed = [f"{path}: {reasons[str(path)]}" for _, path in picked if str(path) in reasons]
                used = [number for number, path in picked if str(path) not in reasons]
                paths = images.get(f"s{position:06d}")
                views = None
                if paths:
                    views = np.stack([_read_render(path) for path in paths])
                out[position] = (views, used if views is not None else [], failed)
        return out

    # ----------------------------------------------------------------------- scoring

    def score(self, images: np.ndarray) -> dict[str, np.ndarray]:
        """(N, V, H, W, 3) uint8 renders -> cosine scores (N, K), probabilities (N, K), weights (N, V)."""
        import torch

        scores, weights = [], []
        for start in range(0, len(images), self.batch_size):
            batch = torch.from_numpy(np.ascontiguousarray(images[start:start + self.batch_size]))
            with torch.no_grad():
                batch = self.augmenter.clean(batch, self.device)
                output = self.model(batch)
                weights.append(output["weights"].float().cpu())
                scores.append(self.model.class_scores(batch, self.class_emb).float().cpu())
        scores = torch.cat(scores)
        return {"scores": scores.numpy(), "probabilities": torch.softmax(self.score_scale * scores, dim=1).numpy(),
                "weights": torch.cat(weights).numpy()}

    def predict(self, samples: Iterable[Sample]) -> Iterator[dict]:
        """One record per sample, in order, rendering and scoring ``chunk`` samples at a time."""
        samples = list(samples)
        with tempfile.TemporaryDirectory(prefix="smile-vlm-predict-") as tmp:
            for start in range(0, len(samples), self.chunk):
                chunk = samples[start:start + self.chunk]
                workdir = Path(tmp) / f"chunk{start}"
                rendered = self.render(chunk, workdir)
                shutil.rmtree(workdir, ignore_errors=True)  # the renders are in memory now
                ready = [p for p, (views, _, _) in rendered.items() if views is not None]
                scored = self.score(np.stack([rendered[p][0] for p in ready])) if ready else None
                row_of = {p: i for i, p in enumerate(ready)}
                for position, sample in enumerate(chunk):
                    views, used, failed = rendered.get(position, (None, [], []))
                    problems = sample.problems + failed
                    if views is None:
                        reason = "; ".join(problems) or f"{sample.path}: no frames"
                        yield self._failure(sample, reason)
                    else:
                        yield self._record(sample, scored, row_of[position], used, problems)

    def _record(self, sample: Sample, scored: dict, row: int, used: list[int], problems: list[str]) -> dict:
        from smile_vlm.metrics import multilabel_predictions

        probabilities = scored["probabilities"][row]
        record = {
            "input": sample.name, "status": "ok", "error": "",
            "top_class": self.classes[int(np.argmax(scored["scores"][row]))],
            "probabilities": dict(zip(self.classes, map(float, probabilities))),
            "view_weights": dict(zip(self.view_names, map(float, scored["weights"][row])))
            if self.learns_view_weights else {},
            "n_frames": len(used), "frames": used if self.sequences else [],
            "skipped": problems,
        }
        if self.multi_label:
            chosen = multilabel_predictions(scored["scores"][row:row + 1], self.multilabel_rule, self.score_scale)[0]
            record["labels"] = [name for name, on in zip(self.classes, chosen) if on]
        return record

    def _failure(self, sample: Sample, reason: str) -> dict:
        return {"input": sample.name, "status": "error", "error": reason, "top_class": "",
                "probabilities": {}, "view_weights": {}, "n_frames": 0, "frames": [], "skipped": []}


def _read_render(path: str) -> np.ndarray:
    """A render PNG as the store packs it: RGB uint8 (a grey depth render replicated, lossless)."""
    from PIL import Image

    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"), dtype=np.uint8)


def _landmarks(mesh_path: Path) -> str:
    """The Bosphorus .lm3 beside a .bnt (its nose tip centres the crop, as in the index)."""
    landmarks = Path(mesh_path).with_suffix(".lm3")
    return str(landmarks) if Path(mesh_path).suffix.lower() == ".bnt" and landmarks.is_file() else ""


# --------------------------------------------------------------------------- output

def records_table(records: list[dict], classes: list[str], view_names: list[str]) -> pd.DataFrame:
    """One CSV row per record: p_<class>, w_<view> columns, frames pipe-joined."""
    rows = []
    for record in records:
        row = {"input": record["input"], "status": record["status"], "top_class": record["top_class"]}
        row.update({f"p_{name}": record["probabilities"].get(name) for name in classes})
        row.update({f"w_{name.replace(' ', '')}": record["view_weights"].get(name) for name in view_names})
        if "labels" in record:
            row["labels"] = "|".join(record["labels"])
        row["n_frames"] = record["n_frames"]
        row["frames"] = "|".join(map(str, record["frames"]))
        row["error"] = record["error"] or "; ".join(record["skipped"])
        rows.append(row)
    return pd.DataFrame(rows)


def predict_paths(model_path, inputs, out_csv=None, out_json=None, *, classes=None, prompts=None,
                  kind: str = DEFAULT_PREDICT["kind"], device: str = "cpu", batch_size: int = 32, units: str | None = None,
                  echo=None, wise_alpha: float | None = None) -> list[dict]:
    """Predict every sample of ``inputs``; write the CSV / JSON atomically; return the records.

    ``echo(record)`` is called as each record is ready (the CLI prints a line per sample).
    ``wise_alpha`` mixes a fine-tuned model with its pretraining (smile_vlm.wise; None: its variant's).
    """
    if kind not in INPUT_KINDS:
        raise ValueError(f"kind must be one of {INPUT_KINDS}, got {kind!r}")
    predictor = Predictor(model_path, classes=classes, prompts=prompts, device=device,
                          batch_size=batch_size, units=units, wise_alpha=wise_alpha)
    sequences = predictor.sequences if kind == "auto" else kind == "sequence"
    samples = find_samples(inputs, sequences)
    records = []
    for record in predictor.predict(samples):
        records.append(record)
        if echo is not None:
            echo(record)
    if out_csv is not None:
        atomic.write_csv(out_csv, records_table(records, predictor.classes, predictor.view_names))
    if out_json is not None:
        atomic.write_json(out_json, {"model": str(model_path), "classes": predictor.classes,
                                     "views": predictor.view_names, "predictions": records})
    return records


def merge_predictions(csvs: Iterable[str | Path], out_csv) -> pd.DataFrame:
    """One table of the workflow's per-subject predictions, with a ``subject`` column first."""
    frames = []
    for path in map(Path, csvs):
        frame = pd.read_csv(path, dtype={"frames": str}, keep_default_na=False)
        frame.insert(0, "subject", path.stem)
        frames.append(frame)
    merged = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    atomic.write_csv(out_csv, merged)
    return merged
