"""The pretraining corpus: generated faces with FACS captions, rendered as the datasets are.

``build_corpus`` draws identities of the procedural face and, when an ICT-FaceKit folder is
given, of ICT-FaceKit (real scanned geometry), random AU combinations (emotions realised through
the ``au_tables`` the settings name, or free combinations, some of their AUs on one side only)
and intensities, and head poses and motion, and renders every view of the render settings:
static scans, and 4D sequences as dynamic images (rank pooling, as ``render.render_shard`` does).
Each identity realises emotions as a subject of the generator does (``synth.realisation``: its
own AU gains, side bias and timing under ``variation``). The generator knows every action unit
and intensity it applied, so each face comes with a caption (``synth.captions``).
``smile_vlm.pretrain`` trains on it. Every option at its default draws nothing extra, so the
defaults give the corpus of one EMFACS table, both-sided AUs and a linear head drift.

Identities never meet evaluation data: the synthetic datasets draw subject s from the seed key
(seed, dataset code 0-4, s, ...) (``synth.layouts.rng_for``); the corpus draws from
(seed, PRETRAIN_STREAM, source code, identity, ...), a disjoint key space, and names its
subjects ``pt-<source>-NNNN``, a spelling no dataset uses.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from smile_vlm import atomic
from smile_vlm.dynamic import apply_support, approximate_rank_pooling, common_support, to_uint8
from smile_vlm.mesh import Mesh
from smile_vlm.errors import ScanError
from smile_vlm.normalize import canonicalize, nose_tip, smooth_track
from smile_vlm.progress import ProgressLog
from smile_vlm.sequence import register_in_memory
from smile_vlm.settings import complete, section_enum
from smile_vlm.synth import face as face_model
from smile_vlm.synth.captions import VISIBLE_WEIGHT, caption
from smile_vlm.synth.layouts import DEFAULTS as SYNTHETIC_DEFAULTS
from smile_vlm.synth.motion import sequence_poses
from smile_vlm.synth.realisation import Realiser
from smile_vlm.synth.unit_shapes import vary_unit_fields
from smile_vlm.synth.units import UNILATERAL_UNITS, parse_unit, unit_key

log = logging.getLogger(__name__)

PRETRAIN_STREAM = 1000  # seed-key element of pretraining; datasets use their code 0-4 here
SOURCES = ("procedural", "ict")
CAPTION_STYLES = section_enum("pretrain", "captions")
# What pretrain.variation and pretrain.head_motion override: the generator's own settings.
DEFAULT_VARIATION = SYNTHETIC_DEFAULTS["variation"]
DEFAULT_HEAD_MOTION = SYNTHETIC_DEFAULTS["head_motion"]
# Settings that change the corpus (the rest only change the training).
CORPUS_KEYS = ("seed", "identities", "ict_fraction", "ict_dir", "samples_per_identity", "dynamic_fraction",
               "frames", "prototype_fraction", "neutral_fraction", "max_units", "intensity", "au_jitter",
               "pose_sigma_deg", "noise_mm", "resolution", "render_size", "au_tables", "variation",
               "one_sided_fraction", "low_intensity_fraction", "low_intensity", "head_motion", "registration",
               "captions", "openings", "unit_shapes")
# What a cached corpus.npz must hold besides its digest (units: each sample's apex AU weights).
CORPUS_FIELDS = ("images", "captions", "subjects", "sources", "dynamic", "units")


def check_corpus_options(pretrain: dict) -> dict:
    """``pretrain`` with the corpus's choices checked, before anything renders. ``variation`` and
    ``head_motion`` stay overrides of the synthetic section's keys (the generator's meanings),
    completed where they are used (``realiser_of``, ``render_dynamic``)."""
    from smile_vlm.synth.au_tables import TABLES
    from smile_vlm.synth.motion import HEAD_MOTIONS

    for key, known in (("variation", DEFAULT_VARIATION), ("head_motion", DEFAULT_HEAD_MOTION)):
        extra = sorted(set(pretrain[key] or {}) - set(known))
        if extra:
            raise ValueError(f"unknown pretrain.{key} settings {extra} (known: {', '.join(sorted(known))})")
    unknown = [name for name in pretrain["au_tables"] if name not in TABLES]
    if unknown or not pretrain["au_tables"]:
        raise ValueError(f"pretrain.au_tables {pretrain['au_tables']}: choose one or more of {', '.join(TABLES)}")
    kind = head_motion(pretrain)["kind"]
    if kind not in HEAD_MOTIONS:
        raise ValueError(f"pretrain.head_motion.kind {kind!r}: choose one of {', '.join(HEAD_MOTIONS)}")
    if pretrain["captions"] not in CAPTION_STYLES:
        raise ValueError(f"pretrain.captions {pretrain['captions']!r}: choose one of {', '.join(CAPTION_STYLES)}")
    return pretrain


def head_motion(pretrain: dict) -> dict:
    """The complete head-motion setting of the corpus's sequences."""
    return {**DEFAULT_HEAD_MOTION, **(pretrain["head_motion"] or {})}


# --------------------------------------------------------------------------- identities


@dataclass(frozen=True)
class CorpusIdentity:
    subject: str  # pt-<source>-NNNN
    source: str  # "procedural" or "ict"
    index: int  # identity number within its source


def identity_key(pretrain: dict, identity: CorpusIdentity, *more: int) -> list[int]:
    """The seed key of an identity (and of its samples): disjoint from every dataset's rng_for key."""
    return [int(pretrain["seed"]), PRETRAIN_STREAM, SOURCES.index(identity.source), identity.index, *map(int, more)]


def corpus_identities(pretrain: dict) -> list[CorpusIdentity]:
    """The corpus's identities: ICT-FaceKit's share first (only with ict_dir), then procedural."""
    total = int(pretrain["identities"])
    n_ict = int(round(total * float(pretrain["ict_fraction"]))) if pretrain.get("ict_dir") else 0
    identities = [CorpusIdentity(f"pt-ict-{k:04d}", "ict", k) for k in range(n_ict)]
    return identities + [CorpusIdentity(f"pt-procedural-{k:04d}", "procedural", k) for k in range(total - n_ict)]


def face_of(pretrain: dict, identity: CorpusIdentity):
    """The face model of one corpus identity (``FaceModel`` or ``IctFaceModel``)."""
    rng = np.random.default_rng(identity_key(pretrain, identity))
    if identity.source == "ict":
        from smile_vlm.synth.ict import IctFaceModel

        return IctFaceModel(pretrain["ict_dir"], rng)
    model = face_model.FaceModel(face_model.sample_identity(rng), int(pretrain["resolution"]))
    vary_unit_fields(model, rng, float(pretrain["unit_shapes"]))
    return model


# --------------------------------------------------------------------------- one sample


def realiser_of(pretrain: dict, identity: CorpusIdentity) -> Realiser:
    """How one identity realises emotions (its own stream, apart from its face's and samples')."""
    variation = {**DEFAULT_VARIATION, **(pretrain["variation"] or {})}
    return Realiser(pretrain["au_tables"], variation, np.random.default_rng(identity_key(pretrain, identity, 0, 1)))


def intensity_range(rng: np.random.Generator, pretrain: dict) -> tuple[float, float]:
    """The range a sample's intensity is drawn from: ``low_intensity`` for a share of samples."""
    fraction = float(pretrain["low_intensity_fraction"])
    chosen = pretrain["low_intensity"] if fraction and rng.random() < fraction else pretrain["intensity"]
    return float(chosen[0]), float(chosen[1])


def sample_units(rng: np.random.Generator, pretrain: dict, style: Realiser) -> tuple[dict, str | None]:
    """AU weights of one sample and the emotion it was made as (None: neutral or a free
    combination): neutral, an emotion as ``style`` realises it, or a free AU combination (each
    AU that has a one-sided form on a random side with probability ``one_sided_fraction``)."""
    draw = rng.random()
    if draw < pretrain["neutral_fraction"]:
        return {}, None
    if draw < pretrain["neutral_fraction"] + pretrain["prototype_fraction"]:
        emotion = str(rng.choice(face_model.EMOTIONS))
        low, high = intensity_range(rng, pretrain)
        return style.weights(emotion, float(rng.uniform(low, high)), rng, jitter=float(pretrain["au_jitter"])), emotion
    low, high = intensity_range(rng, pretrain)
    count = int(rng.integers(1, int(pretrain["max_units"]) + 1))
    units = rng.choice(face_model.ACTION_UNITS, size=count, replace=False)
    weights = {int(au): float(rng.uniform(low, high)) for au in sorted(units)}
    one_sided = float(pretrain["one_sided_fraction"])
    if one_sided:
        weights = {unit_key(au, str(rng.choice(["L", "R"]))) if au in UNILATERAL_UNITS and rng.random() < one_sided
                   else au: w for au, w in weights.items()}
    return style.individualise(weights), None


def both_sides_merged(weights: dict) -> dict:
    """``weights`` with an AU active on both sides (an identity's side bias splits every AU that
    has a one-sided form) written as the bilateral AU at the mean of its sides: the caption names
    a side only where one side acts alone, and EMFACS prototypes still match."""
    merged = {}
    for key, w in weights.items():
        au, side = parse_unit(key)
        other = None if side is None else unit_key(au, "R" if side == "L" else "L")
        if side is not None and weights.get(other, 0.0) >= VISIBLE_WEIGHT and w >= VISIBLE_WEIGHT:
            merged[au] = merged.get(au, 0.0) + w / 2
        else:
            merged[key] = merged.get(key, 0.0) + w
    return merged


def sample_caption(apex: dict, dynamic: bool, emotion: str | None, pretrain: dict) -> str:
    """The caption of one sample in the ``captions`` style: ``emfacs`` names the emotion whose
    EMFACS prototype the AUs contain, ``drawn`` the emotion the sample was made as (whichever
    table realised it), ``units`` no emotion."""
    style = pretrain["captions"]
    apex = both_sides_merged(apex)
    if style == "drawn":
        return caption(apex, dynamic=dynamic, with_emotion=False, emotion=emotion)
    return caption(apex, dynamic=dynamic, with_emotion=style == "emfacs")


def draw_sample(rng: np.random.Generator, pretrain: dict, style: Realiser) -> dict:
    """What one sample shows, drawn before anything it renders: AU ``weights``, the ``emotion`` it
    was made as, the 4D ``strength`` profile (None: a static scan), the ``apex`` weights and the
    ``caption``."""
    weights, emotion = sample_units(rng, pretrain, style)
    dynamic = bool(rng.random() < pretrain["dynamic_fraction"])
    strength = style.profile(int(pretrain["frames"]), rng, "posed") if dynamic else None
    apex = weights if strength is None else {au: w * float(strength.max()) for au, w in weights.items()}
    return {"weights": weights, "emotion": emotion, "strength": strength, "apex": apex,
            "caption": sample_caption(apex, dynamic, emotion, pretrain), "open": cut_open(rng, pretrain["openings"])}


def cut_open(rng: np.random.Generator, share) -> bool:
    """Whether a sample's procedural face has its eye and mouth holes cut (``openings``: true or
    1 = every sample, false or 0 = none, a number = that share). Only a share draws, so corpora of
    every sample or none keep their bytes."""
    share = float(share)
    return share >= 1.0 if share in (0.0, 1.0) else bool(rng.random() < share)


def _mesh(model, au_weights: dict, rng: np.random.Generator, pose, noise_mm: float, shift=None,
          openings: bool = False) -> Mesh:
    frame = model.deform(au_weights, rng, tuple(float(p) for p in pose), noise_mm, shift)
    # ICT-FaceKit's face mesh has its eye and mouth holes already; the procedural face cuts them
    triangles = model.open_triangles(au_weights) if openings and hasattr(model, "open_triangles") else model.triangles
    return Mesh(np.asarray(frame.vertices, dtype=np.float32), np.asarray(triangles))


def render_static(renderer, model, sample: dict, rng, pretrain: dict, render: dict) -> np.ndarray:
    pose = face_model.random_pose(rng, float(pretrain["pose_sigma_deg"]))
    mesh = _mesh(model, sample["weights"], rng, pose, float(pretrain["noise_mm"]), openings=sample["open"])
    return renderer.render(canonicalize(mesh, render))


def render_dynamic(renderer, model, sample: dict, rng, pretrain: dict, render: dict) -> np.ndarray:
    """One dynamic image per view of a sequence: the steps of ``render.render_shard`` for 4D data
    (smoothed nose-tip track, or with ``registration`` the frames registered into one pose and
    centre as the render job registers them; wide crop, one support per view, approximate rank
    pooling). The head drifts from a random start pose to a random end pose, moved as
    ``head_motion`` says."""
    from smile_vlm.render import canonicalize_wide

    weights, strength = sample["weights"], sample["strength"]
    sigma = float(pretrain["pose_sigma_deg"])
    pose_start, pose_end = (np.asarray(face_model.random_pose(rng, sigma)) for _ in range(2))
    poses, shifts = sequence_poses(len(strength), rng, head_motion(pretrain), pose_start, pose_end)
    meshes = [_mesh(model, {au: w * s for au, w in weights.items()}, rng, pose, float(pretrain["noise_mm"]), shift,
                    sample["open"]) for s, pose, shift in zip(strength, poses, shifts)]
    if pretrain["registration"] == "none":
        track = smooth_track(np.stack([nose_tip(mesh) for mesh in meshes]), int(render["nose_smoothing"]))
    else:
        meshes, centre = register_in_memory(meshes, pretrain["registration"], render)
        if not meshes:
            raise ScanError("<pretraining corpus sequence>", "no frame admits a rigid registration")
        track = np.repeat(centre[None], len(meshes), axis=0)
    views, inside = [], []
    for mesh, tip in zip(meshes, track):
        mesh.landmarks["nose_tip"] = tip.astype(np.float32)
        frame_views, frame_inside = renderer.render_with_support(canonicalize_wide(mesh, render))
        views.append(frame_views)
        inside.append(frame_inside)
    support = common_support(np.stack(inside))
    frames = np.stack([apply_support(v, support & i) for v, i in zip(views, inside)])  # (T, V, H, W, 3)
    return np.stack([to_uint8(approximate_rank_pooling(frames[:, view])) for view in range(frames.shape[1])])


# --------------------------------------------------------------------------- corpus


def corpus_digest(settings: dict) -> str:
    """What the corpus depends on: its pretrain keys and the render settings."""
    pretrain = settings["pretrain"]
    about = {"pretrain": {k: pretrain[k] for k in CORPUS_KEYS}, "render": settings["render"]}
    about["pretrain"]["ict_dir"] = None if pretrain["ict_dir"] is None else str(pretrain["ict_dir"])
    return hashlib.sha256(json.dumps(about, sort_keys=True).encode()).hexdigest()[:16]


def build_corpus(settings: dict) -> dict:
    """Render the whole corpus of the resolved settings (``pretrain.resolve``): ``images`` uint8
    (N, V, S, S, 3) and per sample ``captions``, ``subjects``, ``sources``, ``dynamic`` (bool) and
    ``units`` (AU weights as JSON)."""
    from smile_vlm.render import Renderer

    pretrain = settings["pretrain"]
    # the render section completed here, for the corpus alone: its own render_size, the job's threads
    render = complete("render", {**settings["render"], "size": int(pretrain["render_size"])})
    if pretrain["ict_dir"] and not (Path(pretrain["ict_dir"]) / "generic_neutral_mesh.obj").is_file():
        raise FileNotFoundError(f"pretrain.ict_dir {pretrain['ict_dir']}: no ICT-FaceKit generic_neutral_mesh.obj "
                                "there; point it at a FaceXModel/ folder or set it to null")
    identities = corpus_identities(pretrain)
    started = time.perf_counter()
    images, rows = [], []
    progress = ProgressLog(log, "pretraining corpus", len(identities) * int(pretrain["samples_per_identity"]),
                           "samples rendered")
    with Renderer(render) as renderer:
        for identity in identities:
            model, style = face_of(pretrain, identity), realiser_of(pretrain, identity)
            for k in range(int(pretrain["samples_per_identity"])):
                rng = np.random.default_rng(identity_key(pretrain, identity, k + 1))
                sample = draw_sample(rng, pretrain, style)
                if sample["strength"] is None:
                    views = render_static(renderer, model, sample, rng, pretrain, render)
                else:
                    views = render_dynamic(renderer, model, sample, rng, pretrain, render)
                images.append(views)
                rows.append({"caption": sample["caption"], "subject": identity.subject, "source": identity.source,
                             "dynamic": sample["strength"] is not None,
                             "units": json.dumps({str(au): round(w, 4) for au, w in sample["apex"].items()})})
                progress.step()
    log.info("pretraining corpus: %d samples of %d identities (%d ICT-FaceKit) rendered in %.1f s",
             len(rows), len(identities), sum(i.source == "ict" for i in identities), time.perf_counter() - started)
    return {"images": np.stack(images), "captions": [row["caption"] for row in rows],
            "subjects": [row["subject"] for row in rows], "sources": [row["source"] for row in rows],
            "dynamic": [row["dynamic"] for row in rows], "units": [row["units"] for row in rows]}


def cached_corpus(settings: dict, path: Path) -> dict | None:
    """The corpus cached at ``path`` when it was built with the same settings and holds every
    field, else None."""
    if not path.is_file():
        return None
    with np.load(path, allow_pickle=False) as data:
        missing = sorted(set(CORPUS_FIELDS) - set(data.files))
        if missing:  # written before the corpus kept these: rebuilt, never trained on without them
            log.info("pretraining corpus %s lacks %s: rebuilding it", path, ", ".join(missing))
        elif str(data["digest"]) == corpus_digest(settings):
            return {key: data[key] if key == "images" else data[key].tolist() for key in CORPUS_FIELDS}
    return None


def load_or_build_corpus(settings: dict, path: Path) -> dict:
    """The corpus cached at ``path`` when it was built with the same settings, else built (and cached)."""
    cached = cached_corpus(settings, path)
    if cached is not None:
        log.info("reusing the pretraining corpus %s", path)
        return cached
    digest = corpus_digest(settings)
    corpus = build_corpus(settings)
    with atomic.atomic_path(path, suffix=".npz") as tmp:
        np.savez_compressed(tmp, digest=np.array(digest), images=corpus["images"],
                 **{key: np.array(value) for key, value in corpus.items() if key != "images"})
    return corpus
