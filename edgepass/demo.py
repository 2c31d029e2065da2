"""The bundled demo: a small residual CNN trained on scikit-learn's digits (8x8 images, 10 classes).

``scripts/train_digits.py`` trains it (seconds on a CPU) and writes ``data/models/digits_cnn.onnx``
plus the calibration/evaluation arrays ``data/models/digits_data.npz``; both ship with the package.
"""
from __future__ import annotations

from importlib import resources

import torch
from torch import nn

DEMO_ONNX = "digits_cnn.onnx"
DEMO_DATA = "digits_data.npz"


class DigitsNet(nn.Module):
    """Stem, two residual stages and a classifier: small, but with the coupling real CNNs have."""

    def __init__(self, width: int = 32, classes: int = 10):
        super().__init__()
        w = width
        self.stem = nn.Sequential(nn.Conv2d(1, w, 3, padding=1, bias=False), nn.BatchNorm2d(w), nn.ReLU())
        self.block1 = nn.Sequential(nn.Conv2d(w, w, 3, padding=1, bias=False), nn.BatchNorm2d(w), nn.ReLU(),
                                    nn.Conv2d(w, w, 3, padding=1, bias=False), nn.BatchNorm2d(w))
        self.down = nn.Sequential(nn.Conv2d(w, 2 * w, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(2 * w), nn.ReLU())
        self.block2 = nn.Sequential(nn.Conv2d(2 * w, 4 * w, 1, bias=False), nn.BatchNorm2d(4 * w), nn.ReLU(),
                                    nn.Conv2d(4 * w, 4 * w, 5, padding=2, groups=4 * w, bias=False),
                                    nn.BatchNorm2d(4 * w), nn.ReLU(),
                                    nn.Conv2d(4 * w, 2 * w, 1, bias=False), nn.BatchNorm2d(2 * w))
        self.relu = nn.ReLU()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(2 * w, classes)

    def forward(self, x):
        x = self.stem(x)
        x = self.relu(x + self.block1(x))
        x = self.down(x)
        x = self.relu(x + self.block2(x))
        return self.fc(torch.flatten(self.pool(x), 1))


def demo_path(name: str = DEMO_ONNX):
    """Path of a bundled demo file (inside the installed package)."""
    return resources.files("edgepass") / "data" / "models" / name


def train_classifier(model: nn.Module, x, y, *, epochs: int = 40, seed: int = 0, lr: float = 3e-3,
                     batch: int = 64) -> nn.Module:
    """Deterministic AdamW + cosine training on in-memory arrays (the demo's and the benchmarks' nets)."""
    torch.manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    g = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        model.train()
        for idx in torch.randperm(len(xt), generator=g).split(batch):
            opt.zero_grad()
            nn.functional.cross_entropy(model(xt[idx]), yt[idx]).backward()
            opt.step()
        sched.step()
    return model.eval()
