"""Shared fixtures: torchvision architectures (random weights) and their ONNX exports, cached per session."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from edgepass.export import export_onnx  # noqa: F401  (tests import it from here)

ARCHS = ["resnet18", "resnet50", "mobilenet_v2", "mobilenet_v3_small", "efficientnet_b0", "shufflenet_v2_x1_0",
         "regnet_y_400mf", "densenet121", "squeezenet1_0", "convnext_tiny", "vit_b_16"]


@pytest.fixture(scope="session", autouse=True)
def compile_cache(tmp_path_factory):
    """One edgepass cache for the whole session (never the user's): trained optimizers and fitted
    accuracy predictors are built once, not per test."""
    path = tmp_path_factory.getbasetemp() / "edgepass-cache"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("EDGEPASS_CACHE", str(path))
        yield path


def torchvision_model(name: str) -> torch.nn.Module:
    tv = pytest.importorskip("torchvision")
    torch.manual_seed(0)
    return tv.models.get_model(name, weights=None).eval()


class _Zoo:
    def __init__(self, root: Path):
        self.root = root
        self.models: dict = {}

    def model(self, name):
        if name not in self.models:
            self.models[name] = torchvision_model(name)
        return self.models[name]

    def example(self, name):
        return (torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(0)),)

    def onnx(self, name, exporter="legacy") -> Path:
        path = self.root / f"{name}-{exporter}.onnx"
        if not path.exists():
            export_onnx(self.model(name), self.example(name), path, dynamo=exporter == "dynamo")
        return path


@pytest.fixture(scope="session")
def tvzoo(tmp_path_factory):
    return _Zoo(tmp_path_factory.mktemp("tvzoo"))


@pytest.fixture(scope="session")
def digits_onnx():
    from edgepass.demo import demo_path

    return Path(str(demo_path()))
