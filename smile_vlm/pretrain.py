"""FACS-captioned vision-language pretraining of the vision encoder on generated faces.

The generator knows every action unit and intensity it applied, so each generated face comes
with a caption (``synth.captions``). ``build_corpus`` draws identities of the procedural face
and, when an ICT-FaceKit folder is given, of ICT-FaceKit (real scanned geometry), random AU
combinations (EMFACS prototypes or free combinations) and intensities, and head poses, and
renders every view of the render settings: static scans, and 4D sequences as dynamic images
(rank pooling, as ``render.render_shard`` does). ``pretrain`` trains the SMILE-VLM vision side
on it with the project's own objectives, without labels of any evaluation dataset:

* L_vl-align (Eq. 6): InfoNCE of every view and of the fused embedding against the frozen text
  tower's embedding of the sample's caption;
* L_mv-bt (Eq. 1-4): Barlow Twins between two augmentations of every view;

weighted as in Eq. 10 with gamma = 0 (``losses.smile_vlm_loss``; red-min is left out: captions
are not class prompts). The vision encoder's weights go to ``vision.pt``, which
``encoders.vision.init`` loads into every fold model.

Identities never meet evaluation data: the synthetic datasets draw subject s from the seed key
(seed, dataset code 0-4, s, ...) (``synth.layouts.rng_for``); pretraining draws from
(seed, PRETRAIN_STREAM, source code, identity, ...), a disjoint key space, and names its
subjects ``pt-<source>-NNNN``, a spelling no dataset uses.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from smile_vlm import atomic
from smile_vlm.dynamic import apply_support, approximate_rank_pooling, common_support, to_uint8
from smile_vlm.mesh import Mesh
from smile_vlm.normalize import canonicalize, nose_tip, smooth_track
from smile_vlm.settings import DEFAULT_VISION_SPEC, PRETRAIN_DEFAULTS
from smile_vlm.synth import face as face_model
from smile_vlm.synth.captions import caption

log = logging.getLogger(__name__)

PRETRAIN_STREAM = 1000  # seed-key element of pretraining; datasets use their code 0-4 here
SOURCES = ("procedural", "ict")

DEFAULTS = PRETRAIN_DEFAULTS  # the schema's pretrain section (threads and variants are not run settings)
# Settings that change the corpus (the rest only change the training).
CORPUS_KEYS = ("seed", "identities", "ict_fraction", "ict_dir", "samples_per_identity", "dynamic_fraction",
               "frames", "prototype_fraction", "neutral_fraction", "max_units", "intensity", "au_jitter",
               "pose_sigma_deg", "noise_mm", "resolution", "render_size")
RENDER_KEYS = ("yaws", "pitches", "mode", "radius_mm", "camera_distance", "backend")


def resolve(settings: dict | None) -> dict:
    """``{"pretrain", "render", "encoders"}`` with the pretrain defaults filled in; unknown keys refused."""
    settings = copy.deepcopy(settings or {})
    unknown = set(settings) - {"pretrain", "render", "encoders"}
    if unknown:
        raise ValueError(f"unknown pretraining settings sections {sorted(unknown)} (known: encoders, pretrain, render)")
    extra = set(settings.get("pretrain") or {}) - set(DEFAULTS)
    if extra:
        raise ValueError(f"unknown pretrain settings {sorted(extra)} (known: {', '.join(sorted(DEFAULTS))})")
    pretrain = {**copy.deepcopy(DEFAULTS), **(settings.get("pretrain") or {})}
    if pretrain["identities"] < 1 or pretrain["samples_per_identity"] < 1:
        raise ValueError("pretrain.identities and pretrain.samples_per_identity must be at least 1")
    if pretrain["frames"] < 2:
        raise ValueError(f"pretrain.frames must be at least 2 (a dynamic image needs motion), got {pretrain['frames']}")
    render = {k: v for k, v in (settings.get("render") or {}).items() if k in RENDER_KEYS}
    return {"pretrain": pretrain, "render": render, "encoders": settings.get("encoders") or {}}


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
    return face_model.FaceModel(face_model.sample_identity(rng), int(pretrain["resolution"]))


# --------------------------------------------------------------------------- one sample


def sample_units(rng: np.random.Generator, pretrain: dict) -> dict[int, float]:
    """AU weights of one sample: neutral, a jittered EMFACS prototype, or a free AU combination."""
    low, high = (float(v) for v in pretrain["intensity"])
    draw = rng.random()
    if draw < pretrain["neutral_fraction"]:
        return {}
    if draw < pretrain["neutral_fraction"] + pretrain["prototype_fraction"]:
        emotion = str(rng.choice(face_model.EMOTIONS))
        return face_model.expression_weights(emotion, float(rng.uniform(low, high)), rng,
                                             jitter=float(pretrain["au_jitter"]))
    count = int(rng.integers(1, int(pretrain["max_units"]) + 1))
    units = rng.choice(face_model.ACTION_UNITS, size=count, replace=False)
    return {int(au): float(rng.uniform(low, high)) for au in sorted(units)}


def _mesh(model, au_weights: dict, rng: np.random.Generator, pose, noise_mm: float) -> Mesh:
    frame = model.deform(au_weights, rng, tuple(float(p) for p in pose), noise_mm)
    return Mesh(np.asarray(frame.vertices, dtype=np.float32), np.asarray(model.triangles))


def render_static(renderer, model, weights: dict, rng, pretrain: dict, render: dict) -> np.ndarray:
    pose = face_model.random_pose(rng, float(pretrain["pose_sigma_deg"]))
    return renderer.render(canonicalize(_mesh(model, weights, rng, pose, float(pretrain["noise_mm"])), render))


def render_dynamic(renderer, model, weights: dict, strength: np.ndarray, rng, pretrain: dict,
                   render: dict) -> np.ndarray:
    """One dynamic image per view of a sequence: the steps of ``render.render_shard`` for 4D data
    (smoothed nose-tip track, wide crop, one support per view, approximate rank pooling)."""
    from smile_vlm.render import canonicalize_wide

    sigma = float(pretrain["pose_sigma_deg"])
    pose_start, pose_end = (np.asarray(face_model.random_pose(rng, sigma)) for _ in range(2))
    meshes = []
    for t, s in enumerate(strength):
        fraction = t / max(1, len(strength) - 1)
        meshes.append(_mesh(model, {au: w * s for au, w in weights.items()}, rng,
                            (1 - fraction) * pose_start + fraction * pose_end, float(pretrain["noise_mm"])))
    track = smooth_track(np.stack([nose_tip(mesh) for mesh in meshes]), 5)
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
    """Render the whole corpus: ``images`` uint8 (N, V, S, S, 3) and per sample ``captions``,
    ``subjects``, ``sources``, ``dynamic`` (bool) and ``units`` (AU weights as JSON)."""
    from smile_vlm.render import Renderer

    settings = resolve(settings)
    pretrain, render = settings["pretrain"], settings["render"]
    if pretrain["ict_dir"] and not (Path(pretrain["ict_dir"]) / "generic_neutral_mesh.obj").is_file():
        raise FileNotFoundError(f"pretrain.ict_dir {pretrain['ict_dir']}: no ICT-FaceKit generic_neutral_mesh.obj "
                                "there; point it at a FaceXModel/ folder or set it to null")
    identities = corpus_identities(pretrain)
    started = time.perf_counter()
    images, rows = [], []
    with Renderer({**render, "size": int(pretrain["render_size"])}) as renderer:
        for identity in identities:
            model = face_of(pretrain, identity)
            for k in range(int(pretrain["samples_per_identity"])):
                rng = np.random.default_rng(identity_key(pretrain, identity, k + 1))
                weights = sample_units(rng, pretrain)
                dynamic = bool(rng.random() < pretrain["dynamic_fraction"])
                if dynamic:
                    strength = face_model.temporal_profile(int(pretrain["frames"]), rng, "posed")
                    views = render_dynamic(renderer, model, weights, strength, rng, pretrain, render)
                    apex = {au: w * float(strength.max()) for au, w in weights.items()}
                else:
                    views = render_static(renderer, model, weights, rng, pretrain, render)
                    apex = weights
                images.append(views)
                rows.append({"caption": caption(apex, dynamic=dynamic), "subject": identity.subject,
                             "source": identity.source, "dynamic": dynamic,
                             "units": json.dumps({str(au): round(w, 4) for au, w in apex.items()})})
    log.info("pretraining corpus: %d samples of %d identities (%d ICT-FaceKit) rendered in %.1f s",
             len(rows), len(identities), sum(i.source == "ict" for i in identities), time.perf_counter() - started)
    return {"images": np.stack(images), "captions": [row["caption"] for row in rows],
            "subjects": [row["subject"] for row in rows], "sources": [row["source"] for row in rows],
            "dynamic": [row["dynamic"] for row in rows], "units": [row["units"] for row in rows]}


def load_or_build_corpus(settings: dict, path: Path) -> dict:
    """The corpus cached at ``path`` when it was built with the same settings, else built (and cached)."""
    digest = corpus_digest(settings)
    if path.is_file():
        with np.load(path, allow_pickle=False) as data:
            if str(data["digest"]) == digest:
                log.info("reusing the pretraining corpus %s", path)
                return {key: data[key] if key == "images" else data[key].tolist() for key in data.files if key != "digest"}
    corpus = build_corpus(settings)
    with atomic.atomic_path(path, suffix=".npz") as tmp:
        np.savez_compressed(tmp, digest=np.array(digest), images=corpus["images"],
                 **{key: np.array(value) for key, value in corpus.items() if key != "images"})
    return corpus


# --------------------------------------------------------------------------- training


def vision_spec(settings: dict) -> dict:
    """The encoders.vision spec to pretrain (without ``init``)."""
    vision = {k: v for k, v in (settings["encoders"].get("vision") or {}).items() if k != "init" and v is not None}
    return {**DEFAULT_VISION_SPEC, **vision}


def build_pretrain_model(settings: dict, n_views: int, text_dim: int):
    """The SMILE-VLM vision side (encoder, projector, view-aware fusion) with Eq. 10 at gamma = 0."""
    from smile_vlm.models import build_model

    pretrain = settings["pretrain"]
    variant = {"model": "smile_vlm", "vision": vision_spec(settings), "projector": list(pretrain["projector"]),
               "loss": {"alpha": float(pretrain["alpha"]), "beta": float(pretrain["beta"]), "gamma": 0.0,
                        "tau": float(pretrain["tau"])}}
    return build_model(variant, n_views, text_dim)


def monitor_alignment(model, clean: torch.Tensor, text_emb: torch.Tensor, tau: float) -> float:
    """L_vl-align (Eq. 6) of a fixed batch with batch statistics and no update of anything: it
    changes only when the weights do (so a run that learns nothing keeps it exactly)."""
    from smile_vlm.losses import vl_align_loss
    from smile_vlm.models.common import running_stats_frozen

    was_training = model.training
    model.train()
    with torch.no_grad(), running_stats_frozen(model):
        out = model(clean)
        value = float(vl_align_loss(out["z_views"], out["z_fused"], text_emb, tau))
    model.train(was_training)
    return value


def _checkpoint_digest(settings: dict) -> str:
    return hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:16]


def embed_captions(text_spec: dict | None, captions: list[str]) -> torch.Tensor:
    """(N, D) frozen text-tower embeddings of the captions (each distinct caption embedded once)."""
    from smile_vlm.models.encoders import load_text_encoder

    started = time.perf_counter()
    unique = sorted(set(captions))
    embedded = load_text_encoder(text_spec).encode(unique)
    position = {text: k for k, text in enumerate(unique)}
    log.info("%d captions (%d distinct) embedded by the frozen text tower in %.1f s",
             len(captions), len(unique), time.perf_counter() - started)
    return embedded[torch.tensor([position[c] for c in captions])]


def train_epoch(model, optimizer, augmenter, images: torch.Tensor, text_emb: torch.Tensor, batch_size: int,
                generator: torch.Generator, dtype: torch.dtype | None) -> dict[str, float]:
    """One pass over the corpus in full batches; mean of each Eq. 10 term over the steps."""
    model.train()
    order = torch.randperm(len(images), generator=generator)
    sums = {"total": 0.0, "vl_align": 0.0, "mv_bt": 0.0}
    n_steps = 0
    for start in range(0, len(images) - batch_size + 1, batch_size):
        index = order[start:start + batch_size]
        batch = images[index]
        views_a, views_b = augmenter.two_views(batch, generator)  # Eq. 1's two distortions
        with torch.autocast("cpu", dtype=dtype or torch.float32, enabled=dtype is not None):
            losses = model.training_losses(views_a, views_b, augmenter.clean(batch), text_emb[index], None, None)
        optimizer.zero_grad(set_to_none=True)
        losses["total"].backward()
        optimizer.step()
        for key in sums:
            sums[key] += float(losses[key].detach())
        n_steps += 1
    return {key: value / n_steps for key, value in sums.items()}


def pretrain(settings: dict | None, out_path: str | Path, threads: int | None = None) -> dict:
    """Pretrain the vision encoder and write ``out_path`` (vision.pt) atomically; return its metadata.

    The corpus is cached beside it (``corpus.npz``, reused while its settings are unchanged) and
    the run checkpoints after every epoch (``checkpoint.pt``, removed once vision.pt is written),
    so a killed job resumes where it stopped.
    """
    from smile_vlm.augment import Augmenter
    from smile_vlm.runtime import amp_dtype

    settings = resolve(settings)
    options = settings["pretrain"]
    if threads:
        torch.set_num_threads(int(threads))
    out_path = Path(out_path)
    checkpoint_path = out_path.with_name("checkpoint.pt")
    corpus = load_or_build_corpus(settings, out_path.with_name("corpus.npz"))
    text_emb = embed_captions(settings["encoders"].get("text"), corpus["captions"])

    images = torch.from_numpy(corpus["images"])  # (N, V, S, S, 3) uint8
    n_samples, n_views = images.shape[:2]
    batch_size = min(int(options["batch_size"]), n_samples)
    if batch_size < 2:
        raise ValueError("pretraining needs at least 2 samples per batch (batch statistics of Eq. 1 and 6)")
    torch.manual_seed(int(options["seed"]))
    model = build_pretrain_model(settings, n_views, int(text_emb.shape[1]))
    encoder = model.encoder.vision_encoder
    augmenter = Augmenter(encoder.image_size, options["augment"], encoder.mean, encoder.std)
    optimizer = torch.optim.AdamW(model.parameters(), lr=float(options["lr"]), weight_decay=float(options["weight_decay"]))
    generator = torch.Generator().manual_seed(int(options["seed"]))
    dtype = amp_dtype(str(options["amp"]), torch.device("cpu"))  # the losses stay float32
    monitor = torch.arange(min(n_samples, int(options["monitor_samples"])))
    monitor_args = (augmenter.clean(images[monitor]), text_emb[monitor], float(options["tau"]))

    history = [{"epoch": 0, "monitor_vl_align": monitor_alignment(model, *monitor_args)}]
    digest = _checkpoint_digest(settings)
    if checkpoint_path.is_file():
        state = torch.load(checkpoint_path, map_location="cpu", weights_only=True)
        if state.get("digest") == digest:
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            generator.set_state(state["generator"])
            history = state["history"]
            log.info("resuming pretraining after epoch %d from %s", len(history) - 1, checkpoint_path)

    for epoch in range(len(history), int(options["epochs"]) + 1):
        started = time.perf_counter()
        row = {"epoch": epoch, **train_epoch(model, optimizer, augmenter, images, text_emb, batch_size, generator, dtype),
               "monitor_vl_align": monitor_alignment(model, *monitor_args)}
        row["seconds"] = round(time.perf_counter() - started, 2)
        history.append(row)
        log.info("epoch %d: vl-align %.4f, mv-bt %.3f, monitored vl-align %.4f (%.1f s)", epoch,
                 row["vl_align"], row["mv_bt"], row["monitor_vl_align"], row["seconds"])
        with atomic.atomic_path(checkpoint_path) as tmp:
            torch.save({"digest": digest, "model": model.state_dict(), "history": history,
                        "optimizer": optimizer.state_dict(), "generator": generator.get_state()}, tmp)

    metadata = vision_file(settings, model, history, corpus)
    with atomic.atomic_path(out_path) as tmp:
        torch.save(metadata, tmp)
    checkpoint_path.unlink(missing_ok=True)
    return metadata


def vision_file(settings: dict, model, history: list[dict], corpus: dict) -> dict:
    """What vision.pt holds: the encoder's weights and architecture (checked by encoders.vision.init),
    the projector's and fusion's weights (not loaded by init), the settings, the loss history and the corpus."""
    from smile_vlm.models.encoders import PRETRAINED_VISION_FORMAT, vision_architecture

    state = model.encoder.vision_encoder.state_dict()
    weights = hashlib.sha256()
    for name, tensor in state.items():
        weights.update(name.encode() + tensor.detach().cpu().contiguous().numpy().tobytes())
    return {
        "format": PRETRAINED_VISION_FORMAT,
        "weights_sha256": weights.hexdigest(),  # tells a resumed fine-tuning that vision.pt was rebuilt
        "architecture": vision_architecture(vision_spec(settings)),
        "state_dict": state,
        "projector_state_dict": model.encoder.projector.state_dict(),
        "fusion_state_dict": model.fusion.state_dict(),  # with the projector: the whole pretrained model (wise.py)
        "text_encoder": json.dumps(settings["encoders"].get("text")),
        "settings": json.dumps(settings, sort_keys=True, default=str),
        "history": history,
        "corpus": {"samples": len(corpus["captions"]), "views": int(corpus["images"].shape[1]),
                   "digest": corpus_digest(settings), "subjects": sorted(set(corpus["subjects"])),
                   "dynamic": int(sum(map(bool, corpus["dynamic"])))},
    }
