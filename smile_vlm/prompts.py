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

import pickle
from pathlib import Path

import torch
import yaml
from torch import Tensor

from smile_vlm.errors import ScanError
from smile_vlm.settings import DEFAULT_PROMPTS, prompt_file

BANK_FORMAT = 1


def load_prompts(name: str | Path = DEFAULT_PROMPTS["name"], classes: list[str] | None = None) -> dict[str, list[str]]:
    """``{class: [prompt, ...]}`` from a prompt file: descriptions, then every template x synonym.

    ``name`` is a file stem under ``smile_vlm/prompts/`` or a path to a YAML file. ``classes``
    restricts (and orders) the result; a requested class missing from the file raises.
    """
    path = prompt_file(name)
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

    A bank can be saved once per workflow (``save``) and loaded by every training and evaluation
    job (``load``), so that no job loads the text tower: the embeddings of a frozen encoder do
    not change, and loading the tower costs more than a short training run's first epoch.
    """

    def __init__(self, text_encoder, prompts: dict[str, list[str]], classes: list[str]):
        missing = [c for c in classes if not prompts.get(c)]
        if missing:
            raise ValueError(f"no prompts for classes {missing}")
        texts = [text for c in classes for text in prompts[c]]
        # One text at a time: a batch pads every text to its longest one and its matrix products
        # block by batch size, so a text's embedding would move in its last bits with the other
        # texts beside it. Alone, it depends on its text only, and a bank of every class (rule
        # text_bank) holds exactly the embeddings a job embedding only its own classes computes.
        with torch.no_grad():
            embeddings = torch.cat([text_encoder.encode([text]) for text in texts])
        embeddings = torch.nn.functional.normalize(embeddings.float(), dim=-1).detach()
        self._set(list(classes), texts, [len(prompts[c]) for c in classes], embeddings)

    def _set(self, classes: list[str], texts: list[str], counts: list[int], embeddings: Tensor) -> None:
        # ``embeddings`` arrive normalised once (__init__); normalising a saved bank again on load
        # would move their last bits, and a banked job would no longer train as an unbanked one.
        self.classes = classes
        self.texts = texts
        counts = torch.tensor(counts)
        self.prompt_class = torch.repeat_interleave(torch.arange(len(classes)), counts)
        self._counts = counts
        self._starts = torch.cumsum(counts, 0) - counts
        self.embeddings = embeddings.float().detach()
        self.dim = self.embeddings.shape[1]

    def prompts(self) -> dict[str, list[str]]:
        """``{class: [prompt, ...]}`` in bank order."""
        return {c: self.texts[int(s):int(s + n)] for c, s, n in zip(self.classes, self._starts, self._counts)}

    def select(self, classes: list[str]) -> "TextBank":
        """A bank of some of the classes, in the order given (no re-encoding)."""
        missing = [c for c in classes if c not in self.classes]
        if missing:
            raise ValueError(f"the text bank has no prompts for classes {missing} (it has {self.classes})")
        positions = [self.classes.index(c) for c in classes]
        rows = torch.cat([torch.arange(int(self._starts[i]), int(self._starts[i] + self._counts[i])) for i in positions])
        bank = TextBank.__new__(TextBank)
        bank._set(list(classes), [self.texts[row] for row in rows.tolist()], [int(self._counts[i]) for i in positions],
                  self.embeddings[rows].cpu())
        return bank

    def save(self, path: str | Path, about: dict) -> None:
        """Write the bank atomically; ``about`` records what it was made from (checked by ``load``)."""
        from smile_vlm.atomic import atomic_path

        state = {"format": BANK_FORMAT, "classes": self.classes, "texts": self.texts,
                 "counts": self._counts.tolist(), "embeddings": self.embeddings.cpu(), "about": about}
        with atomic_path(path) as tmp:
            torch.save(state, tmp)

    @classmethod
    def load(cls, path: str | Path, about: dict, prompts: dict[str, list[str]]) -> "TextBank":
        """The saved bank restricted to the classes of ``prompts``, refused unless it was made from
        the same ``about`` (text encoder, prompt file) and holds exactly these prompts, so a
        stale bank can never stand in for the current prompts or encoder."""
        path = Path(path)
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except (OSError, RuntimeError, EOFError, ValueError, pickle.UnpicklingError) as err:
            raise ScanError(path, f"cannot read the text bank: {str(err).splitlines()[0]}") from err
        if not isinstance(state, dict) or state.get("format") != BANK_FORMAT:
            raise ScanError(path, "not a text bank of this version")
        if state["about"] != about:
            raise ScanError(path, f"text bank was made from {state['about']}, not {about}; rebuild it")
        bank = cls.__new__(cls)
        bank._set(list(state["classes"]), list(state["texts"]), list(state["counts"]), state["embeddings"])
        bank = bank.select(list(prompts))
        if bank.prompts() != prompts:
            raise ScanError(path, "the prompt file changed since the text bank was made; rebuild it")
        return bank

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


def text_bank_about(settings: dict) -> dict:
    """What a prompt bank depends on: the frozen text encoder and the prompt set."""
    return {"text_encoder": settings["encoders"].get("text"), "prompts": str(settings["prompts"]["name"])}


def build_text_bank(settings: dict, classes: list[str], bank_file=None) -> TextBank:
    """The prompt bank of ``classes`` (``settings`` as settings.resolve_settings returns): read from
    ``bank_file`` (``smile-vlm text-bank``) when given, else embedded here with the frozen text encoder."""
    prompts = load_prompts(settings["prompts"]["name"], classes)
    if bank_file:
        return TextBank.load(bank_file, text_bank_about(settings), prompts)
    from smile_vlm.models.encoders import load_text_encoder

    return TextBank(load_text_encoder(settings["encoders"].get("text")), prompts, classes)


def write_text_bank(settings: dict, out_path) -> None:
    """Embed every class of the prompt set once, for all the jobs of a workflow (rule text_bank)."""
    from smile_vlm.settings import resolve_settings

    settings = resolve_settings(settings)
    classes = list(load_prompts(settings["prompts"]["name"]))
    build_text_bank(settings, classes).save(out_path, text_bank_about(settings))
