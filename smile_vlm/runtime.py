"""Where and how a job runs: device, threads, mixed precision, seeds and RNG state, DDP, progress.

Nothing here changes what a run computes except through its settings (``train.amp``,
``train.seed``); ``train.py`` and ``pretrain.py`` share it.
"""

from __future__ import annotations

import os
import random
import sys

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

AMP_SETTINGS = ("auto", "bf16", "fp16", "off")


def select_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def cpu_has_fast_bf16() -> bool:
    """True where oneDNN runs bfloat16 convolutions and matmuls in hardware (AVX-512 and newer).

    There, bf16 autocast makes a compact-CNN step about 1.7x faster (BENCHMARKS.md). Elsewhere
    oneDNN would emulate bf16, which we have not measured and do not expect to pay off, so those
    CPUs keep float32.
    """
    try:
        return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def amp_dtype(setting: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype, or None for full precision. The losses always run in float32
    (losses.full_precision), so only the encoders' matmuls and convolutions change precision."""
    if setting not in AMP_SETTINGS:
        raise ValueError(f"train.amp must be one of {AMP_SETTINGS}, got {setting!r}")
    if setting == "off":
        return None
    if device.type == "cuda":
        if setting == "auto":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return {"bf16": torch.bfloat16, "fp16": torch.float16}[setting]
    if device.type == "cpu" and (setting == "bf16" or (setting == "auto" and cpu_has_fast_bf16())):
        return torch.bfloat16
    return None  # fp16 autocast is CUDA only


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def epoch_generator(seed: int, epoch: int, stream: int, rank: int = 0) -> torch.Generator:
    """An independent CPU generator per (seed, epoch, stream, rank): data order and augmentations
    of epoch e never depend on how many epochs ran before in this process, which makes resume exact."""
    mixed = np.random.SeedSequence([seed, epoch, stream, rank]).generate_state(2, dtype=np.uint32)
    return torch.Generator().manual_seed(int(mixed[0]) << 32 | int(mixed[1]))


def rng_state() -> dict:
    """All global RNG states as tensors and primitives (loadable with weights_only=True)."""
    version, state, gauss = random.getstate()
    name, keys, position, has_gauss, cached = np.random.get_state()
    return {
        "python": {"version": version, "state": torch.tensor(state, dtype=torch.int64), "gauss": gauss},
        "numpy": {"name": name, "keys": torch.from_numpy(keys.astype(np.int64)), "position": int(position),
                  "has_gauss": int(has_gauss), "cached": float(cached)},
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def set_rng_state(state: dict) -> None:
    python = state["python"]
    random.setstate((python["version"], tuple(python["state"].tolist()), python["gauss"]))
    numpy = state["numpy"]
    np.random.set_state((numpy["name"], numpy["keys"].numpy().astype(np.uint32), numpy["position"],
                         numpy["has_gauss"], numpy["cached"]))
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def distributed_context() -> tuple[int, int, int]:
    """(rank, world size, local rank); starts the process group when torchrun set WORLD_SIZE > 1."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1, 0
    if not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return dist.get_rank(), world, int(os.environ.get("LOCAL_RANK", "0"))


def gather_across_ranks(tensor: torch.Tensor) -> torch.Tensor:
    """Concatenate a batch-first tensor over ranks, keeping gradients to every rank's slice."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return tensor
    from torch.distributed.nn.functional import all_gather

    return torch.cat(all_gather(tensor.contiguous()), dim=0)


class global_batch:
    """Under DDP, make model.encode_views return the embeddings of every rank's batch.

    The losses (Eq. 1-10) then see the global batch: batch standardisation, the correlation
    matrices (the Barlow Twins reference all-reduces its c) and the InfoNCE negatives are those of
    the single-process run. The gather is differentiable; each rank backpropagates the same loss
    into its own slice, and all_gather's backward sums those gradients over ranks, so after DDP's
    gradient averaging every parameter gets exactly the single-process gradient. Fusion runs on
    the gathered embeddings too, so text_emb and labels are gathered by the caller.
    """

    def __init__(self, model: nn.Module, enabled: bool):
        self.model, self.enabled = model, enabled

    def __enter__(self):
        if self.enabled:
            local = self.model.encode_views
            self.model.encode_views = lambda images: gather_across_ranks(local(images))
        return self

    def __exit__(self, *exc):
        if self.enabled:
            del self.model.encode_views  # back to the class method
        return False


def progress_enabled(setting) -> bool:
    if setting == "auto":
        return sys.stderr.isatty()
    return bool(setting)


def progress_bar(total: int, description: str, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, desc=description, disable=not enabled, leave=False, dynamic_ncols=True)


def prepare(train: dict) -> tuple[torch.device, int, int]:
    """Device, threads, determinism and seeds of one training process: (device, rank, world size)."""
    rank, world, local_rank = distributed_context()
    device = select_device(train["device"])
    if device.type == "cuda" and world > 1:
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    if train["threads"]:
        torch.set_num_threads(int(train["threads"]))
    if train["deterministic"]:
        use_deterministic_algorithms()
    seed_everything(train["seed"])
    return device, rank, world


def use_deterministic_algorithms() -> None:
    """Deterministic kernels (warn where an op has none), without the two costs that do not make
    a result reproducible.

    torch.use_deterministic_algorithms imports torch._inductor (about a second per job on CPU,
    printed by benchmarks/bench_train.py --compare-baseline) only to set a
    torch.compile flag, and the project never compiles: the same switch is set directly. It also
    makes every new tensor be filled with NaN first, a debugging aid against reads of
    uninitialised memory that costs a share of every CPU training step; no kernel reads it, so the
    weights are bit-identical without it (benchmarks/bench_train.py --compare-baseline checks).
    """
    set_flag = getattr(torch._C, "_set_deterministic_algorithms", None)
    if set_flag is None:  # another torch: the public call, whatever it costs
        torch.use_deterministic_algorithms(True, warn_only=True)
    else:
        set_flag(True, warn_only=True)
    torch.utils.deterministic.fill_uninitialized_memory = False
    torch.backends.cudnn.benchmark = False


def wrap_ddp(module: nn.Module, device: torch.device, world: int) -> nn.Module:
    """The module DDP synchronises when several ranks train one fold; itself otherwise."""
    if world <= 1:
        return module
    if device.type == "cuda":
        module = nn.SyncBatchNorm.convert_sync_batchnorm(module)
    return nn.parallel.DistributedDataParallel(module, device_ids=[device.index] if device.type == "cuda" else None)
