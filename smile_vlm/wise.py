"""The pretrained model as a model, and fine-tuned models that keep its text-aligned space.

A pretraining's ``vision.pt`` (``smile_vlm.pretrain``) holds the whole SMILE-VLM vision side it
trained: the encoder f_v, the projector g_v and the view-aware fusion (files written before the
fusion was saved lack it: their views are then averaged, the fusion's softmax over equal scores).
``checkpoint_of`` turns it into what a trained ``model.pt`` holds, so that prediction can ask it
any prompts with no fine-tuning.

WiSE-FT (Wortsman et al., "Robust fine-tuning of zero-shot models", CVPR 2022,
https://arxiv.org/abs/2109.01903): the weight-space ensemble of the pretrained and the fine-tuned
model, theta_alpha = (1 - alpha) * theta_pretrained + alpha * theta_finetuned, parameter by
parameter. alpha = 1 is plain fine-tuning, alpha = 0 the pretrained model; in between, the paper
finds zero-shot ability kept at little cost in distribution. The line between the two ends is only
meaningful when both share a start, so a WiSE-FT variant also starts its projector and fusion from
the pretraining (variant ``init_head``; the encoder always does with ``vision.init``). The mixing
weight is the variant's ``wise_alpha``; ``models.load_trained`` applies it wherever a trained model
is loaded (evaluation, prediction, the deployable model, which stores the mixed weights).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch
from torch import nn

from smile_vlm.errors import ScanError
from smile_vlm.settings import PLAIN_ALPHA

PRETRAINED_NAME = "pretrained"  # the variant name of a vision.pt scored as a model
PRETRAINING = "pretraining"  # the dataset a vision.pt read as a checkpoint names
APPLIED_KEY = "wise_applied"  # a model.pt whose weights are already mixed (the deployable model)


def torch_file(path, missing: str, what: str):
    """``torch.load`` of a file that must exist (tensors only); a ScanError naming it otherwise."""
    path = Path(path)
    if not path.is_file():
        raise ScanError(path, missing)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises several types for a damaged or foreign file
        raise ScanError(path, f"not a readable {what} ({type(err).__name__}: {str(err).splitlines()[0]})") from None


def read_vision(path) -> dict:
    """The contents of a pretraining's vision.pt; a ScanError naming the file for anything else."""
    state = torch_file(path, "pretrained vision.pt not found (snakemake results/pretrain/<name>/vision.pt builds it)",
                       "vision.pt")
    if not is_pretraining(state):
        raise ScanError(path, "not a pretrained vision encoder of smile-vlm pretrain")
    return state


def is_pretraining(state) -> bool:
    from smile_vlm.models.encoders import PRETRAINED_VISION_FORMAT

    return isinstance(state, dict) and state.get("format") == PRETRAINED_VISION_FORMAT


def pretrained_model(vision: dict) -> nn.Module:
    """The SMILE-VLM model the pretraining trained, with its weights (eval mode)."""
    from smile_vlm.pretrain import build_pretrain_model

    settings = json.loads(vision["settings"])
    text_dim = int(list(vision["projector_state_dict"].values())[-1].shape[0])  # the last Linear's bias
    model = build_pretrain_model(settings, int(vision["corpus"]["views"]), text_dim)
    model.encoder.vision_encoder.load_state_dict(vision["state_dict"])
    model.encoder.projector.load_state_dict(vision["projector_state_dict"])
    if "fusion_state_dict" in vision:
        model.fusion.load_state_dict(vision["fusion_state_dict"])
    else:  # equal scores: the softmax weights every view the same
        last = model.fusion.score[-1]
        nn.init.zeros_(last.weight)
        nn.init.zeros_(last.bias)
    return model.eval()


def checkpoint_of(vision: dict, path) -> dict:
    """A vision.pt as a trained model.pt for prediction: no trained classes, the pretraining's
    render settings (its corpus's image size and frames), its text encoder and its loss's tau."""
    from smile_vlm.settings import complete
    from smile_vlm.views import render_views

    settings = json.loads(vision["settings"])
    model = pretrained_model(vision)
    pretrain = settings["pretrain"]  # render size and frames of the corpus
    render = complete("render", {**settings["render"], "size": int(pretrain["render_size"]),
                                 "frames": int(pretrain["frames"])})
    views = [{"yaw": float(v["yaw"]), "pitch": float(v["pitch"])} for v in render_views(render)]
    from smile_vlm.pretrain import vision_spec

    variant = {"name": PRETRAINED_NAME, "model": "smile_vlm", "vision": vision_spec(settings),
               "projector": list(pretrain["projector"])}
    return {
        "model": model.state_dict(), "variant": variant,
        "settings": {"encoders": {"text": json.loads(vision["text_encoder"])}, "prompts": complete("prompts")},
        "classes": [], "n_views": len(views), "text_dim": int(model.encoder.out_dim), "views": views,
        "deploy": {"render": render, "kind": "", "dataset": PRETRAINING, "settings_hash": vision["weights_sha256"],
                   "image_size": int(pretrain["render_size"])},
    }


# --------------------------------------------------------------------------- WiSE-FT


def interpolate(pretrained: dict, finetuned: dict, alpha: float, source="the pretrained model") -> dict:
    """theta_alpha = (1 - alpha) * theta_pretrained + alpha * theta_finetuned for every float tensor;
    integer buffers (BatchNorm's step count) are the fine-tuned model's. Other names or shapes:
    a ScanError naming ``source``, so that no two architectures are ever mixed."""
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"wise_alpha must be within [0, 1], got {alpha}")
    missing, extra = sorted(set(finetuned) - set(pretrained)), sorted(set(pretrained) - set(finetuned))
    if missing or extra:
        raise ScanError(source, f"another architecture than the fine-tuned model's (its weights lack {missing[:2]}, "
                                f"have {extra[:2]} besides); WiSE-FT mixes a model with its own pretraining only")
    mixed = {}
    for name, tuned in finetuned.items():
        start = pretrained[name]
        if start.shape != tuned.shape:
            raise ScanError(source, f"{name} is {tuple(start.shape)} there, {tuple(tuned.shape)} in the fine-tuned "
                                    "model: another architecture; WiSE-FT mixes a model with its own pretraining only")
        if not tuned.is_floating_point():
            mixed[name] = tuned.clone()
        elif alpha == PLAIN_ALPHA:
            mixed[name] = tuned.clone()
        elif alpha == 0.0:
            mixed[name] = start.to(tuned.dtype).clone()
        else:
            mixed[name] = torch.lerp(start.to(tuned.dtype), tuned, alpha)
    return mixed


def variant_alpha(variant: dict) -> float:
    from smile_vlm.settings import VARIANT_DEFAULTS

    return float((variant or {}).get("wise_alpha", VARIANT_DEFAULTS["wise_alpha"]))


def pretrained_weights(state: dict) -> tuple[dict, str]:
    """The full pretrained state dict a fold model started from (variant ``vision.init``) and its
    path; refused when that vision.pt is missing or was rebuilt after the fold trained."""
    init = ((state.get("variant") or {}).get("vision") or {}).get("init")
    if not init:
        raise ScanError(state.get("variant", {}).get("name", "model"), "wise_alpha < 1 needs a fine-tuning from a "
                        "pretraining (vision.init); this model started from scratch")
    vision = read_vision(init)
    recorded = (state.get("settings") or {}).get("vision_init_sha256")
    if recorded and hashlib.sha256(Path(init).read_bytes()).hexdigest() != recorded:
        raise ScanError(init, "rebuilt since the fold model trained from it; retrain the fold (WiSE-FT mixes a "
                              "model with the pretraining it started from)")
    return pretrained_model(vision).state_dict(), str(init)


def mix_state(state: dict, alpha: float | None = None) -> dict:
    """A model.pt's weights mixed with its pretraining at ``alpha`` (None: its variant's wise_alpha);
    the weights unchanged at 1 or when already mixed (``APPLIED_KEY``)."""
    alpha = variant_alpha(state.get("variant")) if alpha is None else float(alpha)
    if alpha == PLAIN_ALPHA or state.get(APPLIED_KEY) is not None:
        return state["model"]
    start, source = pretrained_weights(state)
    return interpolate(start, state["model"], alpha, source)


def baked(state: dict) -> dict:
    """A model.pt with its WiSE-FT weights mixed in (the deployable model needs no vision.pt)."""
    alpha = variant_alpha(state.get("variant"))
    if alpha == PLAIN_ALPHA or state.get(APPLIED_KEY) is not None:
        return state
    return {**state, "model": mix_state(state), APPLIED_KEY: alpha}


def load_model(model_path, state: dict, device, alpha: float | None = None) -> nn.Module:
    """The model of a model.pt (mixed at ``alpha``; None: its variant's) or of a vision.pt read
    through ``checkpoint_of``, on ``device`` in eval mode."""
    from smile_vlm.models import load_trained

    if state.get("deploy", {}).get("dataset") == PRETRAINING:
        return pretrained_model(read_vision(model_path)).to(device).eval()
    return load_trained(model_path, device, wise_alpha=alpha)[0]


def start_head(model: nn.Module, variant: dict) -> None:
    """Variant ``init_head``: the projector and fusion start from the pretraining too."""
    if not variant.get("init_head"):
        return
    init = (variant.get("vision") or {}).get("init")
    if not init:
        raise ValueError(f"variant {variant.get('name')!r}: init_head needs a pretraining to start from "
                         "(vision.init or encoders.vision.init)")
    load_head(model, init)


def load_head(model: nn.Module, init) -> None:
    """Start a fold model's projector and fusion from the pretraining's (variant ``init_head``)."""
    vision = read_vision(init)
    if "fusion_state_dict" not in vision:
        raise ScanError(init, "holds no fusion weights (written by an older pretrain): rebuild it for init_head")
    try:
        model.encoder.projector.load_state_dict(vision["projector_state_dict"])
        model.fusion.load_state_dict(vision["fusion_state_dict"])
    except (RuntimeError, AttributeError) as err:
        raise ScanError(init, f"its projector and fusion do not fit this variant's: {str(err).splitlines()[0]}; "
                              "use the pretraining's projector and fusion_hidden, or init_head: false") from None
