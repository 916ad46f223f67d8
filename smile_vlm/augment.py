"""Image augmentations for the multiview batches, in plain torch (torchvision is not installed).

Every random parameter is drawn on the CPU from the caller's ``torch.Generator``, one draw per
image, i.e. independently per sample and per view, so a seed fixes the result on any device.
The images then go through the ops on their own device.

SMILE-VLM (§II-C) makes two stochastic augmentations of every view for the mv-bt loss
(Eq. 1); the recipe follows Barlow Twins (Zbontar et al., ICML 2021) minus the parts that break faces
rendered from fixed yaws: no horizontal flip by default (a flipped left view looks like a right
view), no solarisation, no hue jitter on shaded or depth renders.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from smile_vlm.settings import DEFAULT_AUGMENT

# Image statistics CLIP was trained with (openai/CLIP clip.py _transform); CLIP's vision tower
# normalises with them, and so does the augmentation by default.
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def _uniform(count: int, low: float, high: float, generator: torch.Generator) -> torch.Tensor:
    return low + (high - low) * torch.rand(count, generator=generator)


def _bernoulli(count: int, probability: float, generator: torch.Generator) -> torch.Tensor:
    return torch.rand(count, generator=generator) < probability


def to_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 (..., H, W, C) store layout -> float (..., 3, H, W) in [0, 1]; grey/depth repeated to RGB."""
    # Converted in the store's contiguous HWC order, then viewed as CHW: the same values and
    # strides as converting the CHW view, at a third of the cost.
    images = images.float().div_(255.0).movedim(-1, -3)
    if images.shape[-3] == 1:
        images = images.expand(*images.shape[:-3], 3, *images.shape[-2:])
    return images


def resize(images: torch.Tensor, size: int) -> torch.Tensor:
    """(N, C, H, W) -> (N, C, size, size), bilinear with antialiasing when shrinking."""
    if images.shape[-2:] == (size, size):
        return images
    return F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False, antialias=True)


def random_resized_crop(images: torch.Tensor, size: int, generator: torch.Generator,
                        scale, ratio, flip_probability: float) -> torch.Tensor:
    """Crop a random box of each image (area fraction in ``scale``) and resample it to ``size``.

    One affine grid per image does crop, resize and optional flip in a single grid_sample.
    """
    count = images.shape[0]
    area = _uniform(count, scale[0], scale[1], generator)
    log_ratio = _uniform(count, math.log(ratio[0]), math.log(ratio[1]), generator)
    aspect = torch.exp(log_ratio)
    # Box sides as fractions of the image; clamp so the box stays inside the image.
    width = torch.sqrt(area * aspect).clamp(max=1.0)
    height = torch.sqrt(area / aspect).clamp(max=1.0)
    center_x = (1 - width) * (2 * torch.rand(count, generator=generator) - 1)
    center_y = (1 - height) * (2 * torch.rand(count, generator=generator) - 1)
    flip = torch.where(_bernoulli(count, flip_probability, generator), -1.0, 1.0)
    theta = torch.zeros(count, 2, 3)
    theta[:, 0, 0] = width * flip
    theta[:, 0, 2] = center_x
    theta[:, 1, 1] = height
    theta[:, 1, 2] = center_y
    theta = theta.to(images.device, images.dtype)
    grid = F.affine_grid(theta, [count, images.shape[1], size, size], align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)


def color_jitter(images: torch.Tensor, generator: torch.Generator, brightness: float,
                 contrast: float, probability: float) -> torch.Tensor:
    """Random brightness then contrast per image, on [0, 1] images; untouched with 1 - probability."""
    count = images.shape[0]
    apply = _bernoulli(count, probability, generator)
    bright = torch.where(apply, _uniform(count, 1 - brightness, 1 + brightness, generator), 1.0)
    contr = torch.where(apply, _uniform(count, 1 - contrast, 1 + contrast, generator), 1.0)
    bright = bright.to(images.device, images.dtype).view(-1, 1, 1, 1)
    contr = contr.to(images.device, images.dtype).view(-1, 1, 1, 1)
    images = images * bright
    mean = images.mean(dim=(1, 2, 3), keepdim=True)
    return ((images - mean) * contr + mean).clamp(0.0, 1.0)


def gaussian_blur(images: torch.Tensor, generator: torch.Generator, sigma, probability: float) -> torch.Tensor:
    """Separable gaussian blur with a per-image sigma, as one grouped convolution per axis.

    Only the images drawn for a blur are convolved: for the others the kernel would be the
    identity, which returns every finite pixel exactly, so skipping them changes no value.
    """
    count, channels, height, width = images.shape
    apply = _bernoulli(count, probability, generator)
    sigmas = _uniform(count, sigma[0], sigma[1], generator)
    blurred = apply.nonzero().flatten()
    if not len(blurred):
        return images.contiguous()
    radius = max(1, math.ceil(3 * sigma[1]))
    offsets = torch.arange(-radius, radius + 1, dtype=torch.float32)
    kernels = torch.exp(-0.5 * (offsets[None, :] / sigmas[blurred, None]) ** 2)
    kernels = kernels / kernels.sum(dim=1, keepdim=True)
    kernels = kernels.repeat_interleave(channels, dim=0).to(images.device, images.dtype)
    groups = len(blurred) * channels
    flat = images[blurred.to(images.device)].reshape(1, groups, height, width)
    flat = F.pad(flat, (radius, radius, radius, radius), mode="replicate")
    flat = F.conv2d(flat, kernels.view(-1, 1, 1, 2 * radius + 1), groups=groups)
    flat = F.conv2d(flat, kernels.view(-1, 1, 2 * radius + 1, 1), groups=groups)
    out = images.clone(memory_format=torch.contiguous_format)  # the layout the convolution gave every image
    out[blurred.to(images.device)] = flat.view(len(blurred), channels, height, width)
    return out


def gaussian_noise(images: torch.Tensor, generator: torch.Generator, std: float) -> torch.Tensor:
    if std <= 0:
        return images
    noise = torch.randn(images.shape, generator=generator).to(images.device, images.dtype)
    return (images + std * noise).clamp(0.0, 1.0)


def normalize(images: torch.Tensor, mean=CLIP_MEAN, std=CLIP_STD) -> torch.Tensor:
    mean_t = torch.tensor(mean, device=images.device, dtype=images.dtype).view(-1, 1, 1)
    std_t = torch.tensor(std, device=images.device, dtype=images.dtype).view(-1, 1, 1)
    return (images - mean_t) / std_t


class Augmenter:
    """Turns store batches (B, V, H, W, C) uint8 into encoder inputs (B, V, 3, size, size) float.

    ``size``, ``mean`` and ``std`` come from the vision encoder; ``settings`` overrides
    ``DEFAULT_AUGMENT``.
    """

    def __init__(self, size: int, settings: dict | None = None, mean=CLIP_MEAN, std=CLIP_STD):
        unknown = set(settings or {}) - set(DEFAULT_AUGMENT)
        if unknown:
            raise ValueError(f"unknown augment settings {sorted(unknown)}")
        self.size = int(size)
        self.settings = {**DEFAULT_AUGMENT, **(settings or {})}
        self.mean, self.std = tuple(mean), tuple(std)

    def clean(self, images: torch.Tensor, device: torch.device | str | None = None) -> torch.Tensor:
        """No augmentation: resize and normalise (evaluation and the vl-align/red-min inputs)."""
        batch, views = images.shape[:2]
        flat = to_float(images.to(device).flatten(0, 1))
        return normalize(resize(flat, self.size), self.mean, self.std).view(batch, views, 3, self.size, self.size)

    def __call__(self, images: torch.Tensor, generator: torch.Generator,
                 device: torch.device | str | None = None) -> torch.Tensor:
        """One independent stochastic augmentation of every view of every sample."""
        return self._augment(to_float(images.to(device).flatten(0, 1)), images.shape[:2], generator)

    def two_views(self, images: torch.Tensor, generator: torch.Generator,
                  device: torch.device | str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """The A and B distortions of Eq. 1, drawn independently from one float copy of the batch."""
        flat = to_float(images.to(device).flatten(0, 1))
        return self._augment(flat, images.shape[:2], generator), self._augment(flat, images.shape[:2], generator)

    def _augment(self, flat: torch.Tensor, batch_views: tuple[int, int], generator: torch.Generator) -> torch.Tensor:
        s = self.settings
        flat = random_resized_crop(flat, self.size, generator, s["crop_scale"], s["crop_ratio"], s["flip_probability"])
        flat = color_jitter(flat, generator, s["brightness"], s["contrast"], s["jitter_probability"])
        flat = gaussian_blur(flat, generator, s["blur_sigma"], s["blur_probability"])
        flat = gaussian_noise(flat, generator, s["noise_std"])
        return normalize(flat, self.mean, self.std).view(*batch_views, 3, self.size, self.size)
