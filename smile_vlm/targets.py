"""A fold's targets: the store's labels mapped onto the protocol's classes (training and evaluation)."""

from __future__ import annotations

import torch

from smile_vlm.folds import class_index_map


class FoldTargets:
    """Store labels mapped onto the protocol's class indices (a store may hold more classes)."""

    def __init__(self, store_classes: list[str], classes: list[str], multi_label: bool):
        self.map = torch.from_numpy(class_index_map(store_classes, classes))
        self.columns = torch.tensor([store_classes.index(name) for name in classes])
        self.multi_label = multi_label

    def single(self, label: torch.Tensor) -> torch.Tensor:
        return self.map[label]

    def multi(self, labels: torch.Tensor) -> torch.Tensor:
        return labels[:, self.columns]

    def labels(self, batch: dict) -> torch.Tensor:
        return self.multi(batch["labels"]) if self.multi_label else self.single(batch["label"])

    def pseudo_labels(self, classes: torch.Tensor) -> torch.Tensor:
        """The losses' ``labels`` argument in pseudo mode: the pseudo-classes, in the shape of the
        true targets (class indices, or one-hot rows for a multi-label store)."""
        if not self.multi_label:
            return classes
        return torch.nn.functional.one_hot(classes.long(), len(self.columns)).float()

    def prompt_classes(self, batch: dict, generator: torch.Generator) -> torch.Tensor:
        """One class per sample to draw its prompt from: its label, or a random positive (multi-label)."""
        if not self.multi_label:
            return self.single(batch["label"])
        positives = self.multi(batch["labels"])
        scores = torch.rand(positives.shape, generator=generator) * positives
        return scores.argmax(dim=1)
