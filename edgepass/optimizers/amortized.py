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

from ..fileio import write_atomic
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
               "hidden": self.hidden, "seed": self.seed, "format": _FORMAT}
        arrays = {f"p{i}": t.detach().numpy() for i, t in enumerate(self.net.state_dict().values())}
        arrays.update({f"extra_{k}": np.asarray(v) for k, v in (extra or {}).items()})
        buf = io.BytesIO()
        np.savez(buf, config=np.frombuffer(json.dumps(cfg, sort_keys=True).encode(), dtype=np.uint8),
                 meta=np.frombuffer(json.dumps(meta or {}, sort_keys=True).encode(), dtype=np.uint8),
                 x_mean=self.x_mean, x_std=self.x_std, **arrays)
        write_atomic(path, buf.getvalue())
        return path

    @classmethod
    def load(cls, path, *, with_extra: bool = False):
        """The optimizer (and, with ``with_extra``, its ``extra`` arrays and ``meta`` dict). A file
        that is not one this class wrote -- truncated, members missing or mis-shaped, object or
        non-finite arrays, odd config -- raises ValueError (its callers treat that as a cache miss)."""
        import zipfile
        import zlib

        try:
            members = _npz_members(path)
        except (ValueError, EOFError, zipfile.BadZipFile, zlib.error) as exc:   # truncated, not a zip, pickles
            raise ValueError(f"{path}: not a readable .npz ({exc})") from None
        cfg, meta = _json_member(members, "config"), _json_member(members, "meta", default={})
        self = cls(*_checked_config(cfg), budget_dim=cfg["budget_dim"], hidden=cfg["hidden"], seed=cfg["seed"])
        self.x_mean, self.x_std = _standardisation(members, self.device_dim + self.budget_dim)
        _load_weights(self.net, members)
        extra = {k[len("extra_"):]: _finite_array(members[k], k) for k in members if k.startswith("extra_")}
        self.net.eval()
        return (self, extra, meta) if with_extra else self


# -- validation of a loaded file (every failure a ValueError naming what is wrong) --------------
_FORMAT = "edgepass.amortized/1"
_LIMIT = 4096   # widths, knobs and choices beyond any design space: refused before the net is allocated
_MAX_BYTES = 256 << 20   # uncompressed: a small file must not expand to gigabytes


def _npz_members(path) -> dict:
    """Every member of an .npz (never a pickle, never more than :data:`_MAX_BYTES` unpacked)."""
    z = np.load(str(path), allow_pickle=False)
    if not isinstance(z, np.lib.npyio.NpzFile):
        raise ValueError("a single array, not an .npz")
    with z:
        if sum(i.file_size for i in z.zip.infolist()) > _MAX_BYTES:
            raise ValueError(f"unpacks to more than {_MAX_BYTES >> 20} MiB")
        return {k: z[k] for k in z.files}


def _json_member(members: dict, name: str, default=None) -> dict:
    if name not in members:
        if default is not None:
            return default
        raise ValueError(f"member {name} is missing")
    raw = members[name]
    if raw.dtype != np.uint8 or raw.ndim != 1:
        raise ValueError(f"member {name} is not JSON bytes")
    try:
        value = json.loads(raw.tobytes().decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise ValueError(f"member {name} is not valid JSON") from None
    if not isinstance(value, dict):
        raise ValueError(f"member {name} is not a JSON object")
    return value


def _checked_config(cfg: dict) -> tuple[list, int]:
    """``(n_choices, device_dim)`` of a config whose every field has the type and range save() writes."""
    if cfg.get("format") != _FORMAT:
        raise ValueError(f"config format is not {_FORMAT}")

    def small_int(v, low):
        return isinstance(v, int) and not isinstance(v, bool) and low <= v <= _LIMIT

    n_choices = cfg.get("n_choices")
    if not (isinstance(n_choices, list) and 0 < len(n_choices) <= _LIMIT and all(small_int(n, 1) for n in n_choices)):
        raise ValueError("config n_choices must be a list of positive integers")
    for name in ("device_dim", "budget_dim", "hidden"):
        if not small_int(cfg.get(name), 1 if name == "hidden" else 0):
            raise ValueError(f"config {name} must be an integer from 0 to {_LIMIT}")
    seed = cfg.get("seed")
    if not (isinstance(seed, int) and not isinstance(seed, bool) and 0 <= seed < 1 << 63):
        raise ValueError("config seed must be a non-negative 64-bit integer")
    return n_choices, cfg["device_dim"]


def _finite_array(a: np.ndarray, name: str, shape: tuple | None = None) -> np.ndarray:
    if a.dtype.kind not in "fiub":
        raise ValueError(f"member {name} has dtype {a.dtype}, not numeric")
    if shape is not None and a.shape != shape:
        raise ValueError(f"member {name} has shape {a.shape}, expected {shape}")
    if a.dtype.kind == "f" and not np.isfinite(a).all():
        raise ValueError(f"member {name} is not finite")
    return a


def _standardisation(members: dict, width: int) -> tuple[np.ndarray, np.ndarray]:
    for name in ("x_mean", "x_std"):
        if name not in members:
            raise ValueError(f"member {name} is missing")
        _finite_array(members[name], name, (width,))
    if not (members["x_std"] > 0).all():
        raise ValueError("member x_std must be > 0")
    return members["x_mean"].astype(np.float64), members["x_std"].astype(np.float64)


def _load_weights(net, members: dict) -> None:
    """``p0``, ``p1``, ... into ``net``'s state dict, each of exactly the parameter's shape."""
    torch = _torch()
    state = net.state_dict()
    weights = {}
    for i, (key, tensor) in enumerate(state.items()):
        name = f"p{i}"
        if name not in members:
            raise ValueError(f"member {name} is missing")
        weights[key] = torch.from_numpy(_finite_array(members[name], name, tuple(tensor.shape)).astype(np.float32))
    net.load_state_dict(weights)
