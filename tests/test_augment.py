"""Torch-only augmentations: shapes, determinism per generator, independence per image, known values."""

from __future__ import annotations

import pytest
import torch

from smile_vlm.augment import (Augmenter, color_jitter, gaussian_blur, gaussian_noise, random_resized_crop,
                               to_float)


def store_batch(batch=4, views=3, size=20, seed=0) -> torch.Tensor:
    return torch.randint(0, 256, (batch, views, size, size, 3), generator=torch.Generator().manual_seed(seed),
                         dtype=torch.uint8)


def test_augmenter_shapes_and_normalisation():
    images = store_batch()
    augmenter = Augmenter(16, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    out = augmenter(images, torch.Generator().manual_seed(0))
    assert out.shape == (4, 3, 3, 16, 16) and out.dtype == torch.float32
    # [0, 1] images normalised with mean 0.5 and std 0.25 lie in [-2, 2]
    assert out.min() >= -2.0 - 1e-6 and out.max() <= 2.0 + 1e-6
    clean = augmenter.clean(torch.full((1, 2, 8, 8, 3), 255, dtype=torch.uint8))
    assert clean.shape == (1, 2, 3, 16, 16)
    assert torch.allclose(clean, torch.full_like(clean, 2.0))  # (1 - 0.5) / 0.25


def test_same_seed_same_augmentation_other_seed_differs():
    images = store_batch()
    augmenter = Augmenter(16)
    first = augmenter(images, torch.Generator().manual_seed(11))
    assert torch.equal(first, augmenter(images, torch.Generator().manual_seed(11)))
    assert not torch.allclose(first, augmenter(images, torch.Generator().manual_seed(12)))


def test_two_views_differ_and_views_are_augmented_independently():
    # identical content in every sample and view: any difference comes from the random draws
    images = torch.full((2, 3, 20, 20, 3), 100, dtype=torch.uint8)
    images[..., 5:15, 5:15, :] = 250
    a, b = Augmenter(16).two_views(images, torch.Generator().manual_seed(0))
    assert not torch.allclose(a, b)
    flat = a.flatten(0, 1)
    assert all(not torch.allclose(flat[0], flat[i]) for i in range(1, 6))


def test_grey_store_images_become_rgb():
    grey = torch.arange(16, dtype=torch.uint8).view(1, 1, 4, 4, 1)
    rgb = to_float(grey)
    assert rgb.shape == (1, 1, 3, 4, 4)
    assert torch.equal(rgb[0, 0, 0], rgb[0, 0, 2]) and rgb[0, 0, 1, 3, 3] == pytest.approx(15 / 255)


def test_float_conversion_keeps_the_channel_view_layout_and_two_views_equal_two_calls():
    images = store_batch(batch=2, views=2, size=12)
    flat = to_float(images)
    reference = images.movedim(-1, -3).float() / 255.0
    assert torch.equal(flat, reference) and flat.stride() == reference.stride()
    a, b = Augmenter(8).two_views(images, torch.Generator().manual_seed(4))
    generator = torch.Generator().manual_seed(4)
    augmenter = Augmenter(8)
    assert torch.equal(a, augmenter(images, generator)) and torch.equal(b, augmenter(images, generator))


def test_full_crop_is_an_identity_resample():
    images = torch.rand(2, 3, 8, 8)
    out = random_resized_crop(images, 8, torch.Generator().manual_seed(0), scale=(1.0, 1.0), ratio=(1.0, 1.0),
                              flip_probability=0.0)
    assert torch.allclose(out, images, atol=1e-5)


def test_flip_with_probability_one_mirrors_the_image():
    images = torch.rand(1, 3, 8, 8)
    out = random_resized_crop(images, 8, torch.Generator().manual_seed(0), scale=(1.0, 1.0), ratio=(1.0, 1.0),
                              flip_probability=1.0)
    assert torch.allclose(out, images.flip(-1), atol=1e-5)


def test_jitter_blur_noise_known_values():
    constant = torch.full((3, 3, 6, 6), 0.5)
    # a constant image keeps its value under any blur and any contrast change around its mean
    assert torch.allclose(gaussian_blur(constant, torch.Generator().manual_seed(0), sigma=(0.1, 2.0), probability=1.0), constant, atol=1e-6)
    jittered = color_jitter(constant, torch.Generator().manual_seed(0), brightness=0.0, contrast=0.9, probability=1.0)
    assert torch.allclose(jittered, constant)
    bright = color_jitter(constant, torch.Generator().manual_seed(0), brightness=0.5, contrast=0.0, probability=1.0)
    factors = bright[:, 0, 0, 0] / 0.5
    assert ((factors >= 0.5) & (factors <= 1.5)).all() and torch.allclose(bright, factors.view(-1, 1, 1, 1).expand_as(bright) * 0.5)
    untouched = color_jitter(constant, torch.Generator().manual_seed(0), brightness=0.5, contrast=0.4, probability=0.0)
    assert torch.equal(untouched, constant)
    assert torch.equal(gaussian_noise(constant, torch.Generator(), std=0.0), constant)
    noisy = gaussian_noise(constant, torch.Generator().manual_seed(0), std=0.1)
    assert 0.05 < (noisy - constant).std() < 0.15


def test_blur_keeps_mass_and_spreads_a_point():
    point = torch.zeros(1, 1, 15, 15)
    point[0, 0, 7, 7] = 1.0
    blurred = gaussian_blur(point, torch.Generator().manual_seed(0), sigma=(1.0, 1.0), probability=1.0)
    assert blurred.sum().item() == pytest.approx(1.0, abs=1e-5)
    assert blurred[0, 0, 7, 7] < 0.2 and blurred[0, 0, 7, 8] == pytest.approx(blurred[0, 0, 8, 7].item())


def test_blur_skips_the_images_not_drawn_and_changes_no_value():
    """Convolving every image, with the identity kernel where no blur was drawn, gives the same
    values as blurring only the drawn ones."""
    images = torch.rand(12, 3, 24, 24, generator=torch.Generator().manual_seed(5))
    for seed in range(4):
        generator = torch.Generator().manual_seed(seed)
        apply = torch.rand(12, generator=generator) < 0.5
        sigmas = 0.1 + 1.9 * torch.rand(12, generator=generator)
        offsets = torch.arange(-6, 7, dtype=torch.float32)
        kernels = torch.exp(-0.5 * (offsets[None, :] / sigmas[:, None]) ** 2)
        kernels = torch.where(apply[:, None], kernels / kernels.sum(dim=1, keepdim=True), (offsets == 0).float())
        kernels = kernels.repeat_interleave(3, dim=0)
        flat = torch.nn.functional.pad(images.reshape(1, 36, 24, 24), (6, 6, 6, 6), mode="replicate")
        flat = torch.nn.functional.conv2d(flat, kernels.view(-1, 1, 1, 13), groups=36)
        every_image = torch.nn.functional.conv2d(flat, kernels.view(-1, 1, 13, 1), groups=36).view(12, 3, 24, 24)
        blurred = gaussian_blur(images, torch.Generator().manual_seed(seed), sigma=(0.1, 2.0), probability=0.5)
        assert 0 < apply.sum() < 12 and torch.equal(blurred, every_image)
        assert torch.equal(blurred[~apply], images[~apply]) and not torch.equal(blurred[apply], images[apply])


def test_unknown_setting_is_refused():
    with pytest.raises(ValueError, match="unknown augment settings"):
        Augmenter(16, {"crop": 0.5})
