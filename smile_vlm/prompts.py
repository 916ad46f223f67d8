"""Expression prompts and the cached text embeddings built from them.

Prompts are data (``smile_vlm/prompts/<name>.yaml``): per class, rich descriptions (the paper's
Table I plus paraphrases) and synonyms that fill CLIP's FER2013 templates.

How labels enter training: SMILE-VLM calls itself self-supervised, but the prompt paired with an
image is chosen **by that image's class** (``TextBank.sample`` picks one random prompt of the
sample's class, as §III-C samples prompts at training time). The class labels therefore reach the
model through the prompts: the vl-align and red-min terms pull each image toward a description of
its own class. This module makes that explicit instead of hiding it.

``TextBank.class_embeddings`` is CLIP's prompt ensembling (openai/CLIP ``zeroshot_classifier``):
L2-normalise every prompt embedding of a class, average them, L2-normalise the mean. Zero-shot
prediction is the argmax of the cosine similarity between an image embedding and these rows.
"""

from __future__ import annotations

from pathlib import Path

import torch
import yaml
from torch import Tensor

from smile_vlm.errors import ScanError

PROMPT_DIR = Path(__file__).resolve().parent / "prompts"


def load_prompts(name: str | Path = "emotions", classes: list[str] | None = None) -> dict[str, list[str]]:
    """``{class: [prompt, ...]}`` from a prompt file: descriptions, then every template x synonym.

    ``name`` is a file stem under ``smile_vlm/prompts/`` or a path to a YAML file. ``classes``
    restricts (and orders) the result; a requested class missing from the file raises.
    """
    path = Path(name) if str(name).endswith((".yaml", ".yml")) else PROMPT_DIR / f"{name}.yaml"
    if not path.is_file():
        raise ScanError(path, "prompt file not found")
    data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    templates = data.get("templates", [])
    table = data.get("classes")
    if not isinstance(table, dict) or not table:
        raise ScanError(path, "no 'classes' mapping")
    wanted = list(table) if classes is None else list(classes)
    prompts = {}
    for class_name in wanted:
        if class_name not in table:
            raise ScanError(path, f"no prompts for class {class_name!r}")
        entry = table[class_name] or {}
        expanded = list(entry.get("descriptions", []))
        expanded += [template.format(synonym) for synonym in entry.get("synonyms", []) for template in templates]
        prompts[class_name] = list(dict.fromkeys(expanded))  # de-duplicate, keep order
        if not prompts[class_name]:
            raise ScanError(path, f"class {class_name!r} has no descriptions and no synonyms")
    return prompts


class TextBank:
    """All prompt embeddings of the classes, encoded once with the frozen text encoder.

    ``embeddings`` (P, D): L2-normalised prompt embeddings, grouped by class in ``classes`` order;
    ``prompt_class`` (P,): class index of each prompt; ``texts``: the P prompts.
    """

    def __init__(self, text_encoder, prompts: dict[str, list[str]], classes: list[str]):
        missing = [c for c in classes if not prompts.get(c)]
        if missing:
            raise ValueError(f"no prompts for classes {missing}")
        self.classes = list(classes)
        self.texts = [text for c in classes for text in prompts[c]]
        counts = torch.tensor([len(prompts[c]) for c in classes])
        self.prompt_class = torch.repeat_interleave(torch.arange(len(classes)), counts)
        self._counts = counts
        self._starts = torch.cumsum(counts, 0) - counts
        with torch.no_grad():
            embeddings = text_encoder.encode(self.texts)
        self.embeddings = torch.nn.functional.normalize(embeddings.float(), dim=-1).detach()
        self.dim = self.embeddings.shape[1]

    def to(self, device) -> "TextBank":
        self.embeddings = self.embeddings.to(device)
        return self

    def sample(self, class_indices: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """(B, D): one prompt embedding per sample, drawn uniformly among its class's prompts."""
        class_indices = class_indices.long().cpu()
        if class_indices.numel() and (class_indices.min() < 0 or class_indices.max() >= len(self.classes)):
            raise ValueError(f"class indices must lie in [0, {len(self.classes)}), got {class_indices.tolist()}")
        uniform = torch.rand(class_indices.shape, generator=generator)
        offsets = (uniform * self._counts[class_indices]).long()
        return self.embeddings[(self._starts[class_indices] + offsets).to(self.embeddings.device)]

    def class_embeddings(self) -> Tensor:
        """(K, D) prompt ensemble per class: mean of normalised prompt embeddings, renormalised."""
        sums = torch.zeros(len(self.classes), self.dim, device=self.embeddings.device)
        sums.index_add_(0, self.prompt_class.to(self.embeddings.device), self.embeddings)
        return torch.nn.functional.normalize(sums / self._counts.to(sums).unsqueeze(1), dim=-1)
