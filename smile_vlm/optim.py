"""The optimiser and learning-rate schedule of a training job (SMILE-VLM §III-D: AdamW).

Linear warmup from 0, then half a cosine down to ``min_lr_ratio`` of the peak, stepped per batch.
"""

from __future__ import annotations

import math

import torch
from torch import nn


def lr_factor(step: int, total_steps: int, warmup_steps: int, min_ratio: float) -> float:
    """Linear warmup to 1, then half a cosine down to ``min_ratio``."""
    if warmup_steps and step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def make_optimizer(model: nn.Module, settings: dict) -> torch.optim.Optimizer:
    """AdamW; biases and normalisation parameters (ndim <= 1) get no weight decay (as Barlow Twins)."""
    trainable = [(name, p) for name, p in model.named_parameters() if p.requires_grad]
    groups = [{"params": [p for _, p in trainable if p.ndim > 1], "weight_decay": settings["weight_decay"]},
              {"params": [p for _, p in trainable if p.ndim <= 1], "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=settings["lr"], betas=tuple(settings["betas"]))


def make_scheduler(optimizer: torch.optim.Optimizer, train: dict, steps_per_epoch: int) -> torch.optim.lr_scheduler.LambdaLR:
    """The per-step schedule of ``train`` (warmup_epochs, epochs, min_lr_ratio)."""
    total_steps = steps_per_epoch * train["epochs"]
    warmup_steps = int(round(train["warmup_epochs"] * steps_per_epoch))
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_factor(step, total_steps, warmup_steps, train["min_lr_ratio"]))
