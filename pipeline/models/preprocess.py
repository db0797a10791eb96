"""Device-side preprocessing: small uint8 images -> normalised float at the model's resolution.

Loader workers only decode and augment the small uint8 images (32x32 CIFAR, 28x28 Fashion-MNIST);
the resize to the model's resolution (224 for ViT-B/16, 14x more pixels) and normalisation run here,
on the accelerator, after the batch is transferred.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

# timm's ViT weights (augreg, orig_in21k) were trained on inputs scaled to [-1, 1].
VIT_MEAN = (0.5, 0.5, 0.5)
VIT_STD = (0.5, 0.5, 0.5)


class DevicePreprocess(nn.Module):
    """(B, H, W, C) uint8 -> (B, in_chans, img_size, img_size) float, bicubic, normalised."""

    def __init__(
        self,
        img_size: int,
        in_chans: int = 3,
        mean: tuple[float, ...] = VIT_MEAN,
        std: tuple[float, ...] = VIT_STD,
    ) -> None:
        super().__init__()
        self.img_size = img_size
        self.in_chans = in_chans
        self.register_buffer("mean", torch.tensor(mean[:in_chans]).view(1, -1, 1, 1), False)
        self.register_buffer("std", torch.tensor(std[:in_chans]).view(1, -1, 1, 1), False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if images.dtype != torch.uint8 or images.ndim != 4:
            raise ValueError(
                f"expected uint8 images (B, H, W, C), got {images.dtype} {tuple(images.shape)}"
            )
        x = images.permute(0, 3, 1, 2).float().div_(255.0)  # (B, C, H, W) in [0, 1]
        C = x.shape[1]
        if C != self.in_chans:
            if C == 1:  # grayscale data into an RGB model
                x = x.expand(-1, self.in_chans, -1, -1)
            else:
                raise ValueError(f"images have {C} channels, the model expects {self.in_chans}")
        if x.shape[-2:] != (self.img_size, self.img_size):
            down = x.shape[-1] > self.img_size
            x = F.interpolate(
                x, size=(self.img_size, self.img_size), mode="bicubic", antialias=down
            ).clamp_(0.0, 1.0)
        return (x - self.mean) / self.std

    def to_dict(self) -> dict:
        """What rebuilds it (saved with every trained model)."""
        return {"img_size": self.img_size, "in_chans": self.in_chans,
                "mean": [float(m) for m in self.mean.flatten()],
                "std": [float(s) for s in self.std.flatten()]}
