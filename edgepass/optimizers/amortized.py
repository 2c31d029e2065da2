"""The amortized optimizer: a network from (device vector, budget) straight to a design.

Trained once per design space over a population of devices (every device of the database that has
costs for the space, plus synthetic devices interpolated between them); a new device then costs one
forward pass plus the feasibility repair, instead of a search.

Training imitates the optimum: for sampled (device, budget) pairs the exact optimum (exhaustive
enumeration on small spaces) or the evolutionary search's best design is the label, and the network
learns one categorical choice per knob (cross-entropy). Decoding takes the most likely choice per
knob, then :func:`~edgepass.optimizers.search.repair` guarantees the predicted budget (and climbs a
few one-knob steps), and says so when nothing can meet it.

The device vector is what the caller measures or knows about a device. For benchmark spaces it is
the log-latency of a fixed set of reference designs measured on the device (centred), the
hardware embedding HELP also uses; the budget enters as log(budget) relative to the same centre.
Saved as ``.npz`` (weights and config, no pickle).
"""
from __future__ import annotations

import io
import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .budget import Budget
from .search import SearchResult, best_repaired


def _torch():
    import torch

    return torch


@dataclass
class TrainingPair:
    device_vector: np.ndarray
    budget_feature: np.ndarray     # e.g. [log(L) - centre]
    target: np.ndarray             # choice index per knob


class AmortizedOptimizer:
    def __init__(self, n_choices, device_dim: int, budget_dim: int = 1, *, hidden: int = 256, seed: int = 0):
        self.n_choices = [int(n) for n in n_choices]
        self.device_dim, self.budget_dim, self.hidden, self.seed = int(device_dim), int(budget_dim), int(hidden), seed
        torch = _torch()
        torch.manual_seed(seed)
        nn = torch.nn
        self.net = nn.Sequential(nn.Linear(self.device_dim + self.budget_dim, hidden), nn.ReLU(),
                                 nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, sum(self.n_choices)))
        self.x_mean = np.zeros(self.device_dim + self.budget_dim)
        self.x_std = np.ones(self.device_dim + self.budget_dim)

    # -- training ---------------------------------------------------------------------------
    def fit(self, pairs: list[TrainingPair], *, epochs: int = 60, lr: float = 2e-3, batch: int = 256,
            progress: bool = True) -> dict:
        torch = _torch()
        x = np.array([np.concatenate([p.device_vector, p.budget_feature]) for p in pairs], dtype=np.float64)
        y = np.array([p.target for p in pairs], dtype=np.int64)
        self.x_mean, self.x_std = x.mean(0), x.std(0) + 1e-6
        xt = torch.tensor((x - self.x_mean) / self.x_std, dtype=torch.float32)
        yt = torch.tensor(y)
        opt = torch.optim.Adam(self.net.parameters(), lr=lr)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs)
        g = torch.Generator().manual_seed(self.seed)
        # every knob's logits padded to the widest knob, so one cross-entropy covers all knobs
        # (sum over knobs of the batch-mean, as a loop over knobs would; padding gets -inf-like logits)
        splits = np.cumsum([0] + self.n_choices)
        total, widest = int(splits[-1]), max(self.n_choices)
        cols = np.full((len(self.n_choices), widest), total, dtype=np.int64)
        for k, n in enumerate(self.n_choices):
            cols[k, :n] = np.arange(splits[k], splits[k + 1])
        cols_t, pad_mask = torch.tensor(cols), torch.tensor(cols == total)
        it = range(epochs)
        if progress:
            from tqdm import tqdm

            it = tqdm(it, desc="training amortized optimizer", unit="epoch", leave=False)
        t0 = time.perf_counter()
        loss_value = float("nan")
        for _ in it:
            self.net.train()
            for idx in torch.randperm(len(xt), generator=g).split(batch):
                logits = self.net(xt[idx])
                padded = torch.cat([logits, logits.new_zeros(len(idx), 1)], 1)[:, cols_t]
                padded = padded.masked_fill(pad_mask, -1e9)
                loss = torch.nn.functional.cross_entropy(padded.reshape(-1, widest), yt[idx].reshape(-1),
                                                         reduction="sum") / len(idx)
                opt.zero_grad()
                loss.backward()
                opt.step()
                loss_value = loss.item()
            sched.step()
        self.net.eval()
        return {"pairs": len(pairs), "epochs": epochs, "seconds": time.perf_counter() - t0, "loss": loss_value}

    # -- inference --------------------------------------------------------------------------
    def _logits(self, x: np.ndarray) -> np.ndarray:
        """The network's forward pass in numpy (float32, like torch): for the few rows one device
        asks for, torch's per-call overhead and thread pool cost more than the arithmetic."""
        torch = _torch()
        h = ((x - self.x_mean) / self.x_std).astype(np.float32)
        for layer in self.net:
            if isinstance(layer, torch.nn.Linear):
                h = h @ layer.weight.detach().numpy().T + layer.bias.detach().numpy()
            elif isinstance(layer, torch.nn.ReLU):
                h = np.maximum(h, 0)
            else:   # a layer this loop does not know: torch runs the whole net
                with torch.no_grad():
                    return self.net(torch.tensor((x - self.x_mean) / self.x_std, dtype=torch.float32)).numpy()
        return h

    def probabilities(self, device_vectors, budget_features) -> list[np.ndarray]:
        x = np.concatenate([np.atleast_2d(device_vectors), np.atleast_2d(budget_features)], axis=1)
        logits = self._logits(x)
        splits = np.cumsum([0] + self.n_choices)
        out = []
        for k in range(len(self.n_choices)):
            z = logits[:, splits[k]:splits[k + 1]]
            z = np.exp(z - z.max(1, keepdims=True))
            out.append(z / z.sum(1, keepdims=True))
        return out

    def decode(self, device_vectors, budget_features) -> np.ndarray:
        """Most likely choice per knob, for a batch (one forward pass for a whole fleet)."""
        return np.stack([p.argmax(1) for p in self.probabilities(device_vectors, budget_features)], axis=1)

    def optimize(self, problem, budget: Budget, device_vector, budget_feature, *, polish: int = 10,
                 reference_accuracy=None) -> SearchResult:
        """One device: forward pass + feasibility repair under ``problem``'s predicted costs.
        ``budget_feature`` may hold several rows (e.g. :func:`~.population.budget_features`: the
        budget and slightly tighter / looser ones): each distinct decode is repaired and polished and
        the best feasible one wins."""
        t0 = time.perf_counter()
        feats = np.atleast_2d(budget_feature)
        codes = np.unique(self.decode(np.repeat(np.atleast_2d(device_vector), len(feats), 0), feats), axis=0)
        best = best_repaired(problem, budget, codes, reference_accuracy=reference_accuracy, polish=polish)
        best.seconds = time.perf_counter() - t0
        return best

    # -- persistence (no pickle) ------------------------------------------------------------
    def save(self, path, *, extra: dict | None = None, meta: dict | None = None) -> Path:
        """Weights, config, ``extra`` arrays and ``meta`` (JSON) in one ``.npz``, written atomically."""
        path = Path(path)
        cfg = {"n_choices": self.n_choices, "device_dim": self.device_dim, "budget_dim": self.budget_dim,
               "hidden": self.hidden, "seed": self.seed, "format": "edgepass.amortized/1"}
        arrays = {f"p{i}": t.detach().numpy() for i, t in enumerate(self.net.state_dict().values())}
        arrays.update({f"extra_{k}": np.asarray(v) for k, v in (extra or {}).items()})
        from ..compile import write_atomic

        buf = io.BytesIO()
        np.savez(buf, config=np.frombuffer(json.dumps(cfg, sort_keys=True).encode(), dtype=np.uint8),
                 meta=np.frombuffer(json.dumps(meta or {}, sort_keys=True).encode(), dtype=np.uint8),
                 x_mean=self.x_mean, x_std=self.x_std, **arrays)
        write_atomic(path, buf.getvalue())
        return path

    @classmethod
    def load(cls, path, *, with_extra: bool = False):
        """The optimizer (and, with ``with_extra``, its ``extra`` arrays and ``meta`` dict)."""
        torch = _torch()
        with np.load(str(path), allow_pickle=False) as z:
            cfg = json.loads(bytes(z["config"]).decode())
            self = cls(cfg["n_choices"], cfg["device_dim"], cfg["budget_dim"], hidden=cfg["hidden"], seed=cfg["seed"])
            self.x_mean, self.x_std = z["x_mean"], z["x_std"]
            keys = list(self.net.state_dict().keys())
            self.net.load_state_dict({k: torch.from_numpy(z[f"p{i}"]) for i, k in enumerate(keys)})
            extra = {k[len("extra_"):]: z[k] for k in z.files if k.startswith("extra_")}
            meta = json.loads(bytes(z["meta"]).decode()) if "meta" in z.files else {}
        self.net.eval()
        return (self, extra, meta) if with_extra else self
