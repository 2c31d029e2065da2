"""The training table: a compact columnar store of (device, spec, design, precision, metric, value, source).

On disk (``edgepass/data/dataset/public.npz``, format ``edgepass.training-set/1``; see
docs/training-set.md) every string column is dictionary-encoded: integer code arrays plus the
list of distinct strings in a JSON header stored in the same ``.npz`` as a UTF-8 byte array.
Values are float32. Rows are sorted by (source, device, spec) so the code arrays compress to
almost nothing.
"""
from __future__ import annotations

import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

FORMAT = "edgepass.training-set/1"
PRECISIONS: tuple[str, ...] = ("fp32", "fp16", "int8")
#: metric -> unit: latency per inference (ms), energy per inference (mJ), throughput (images/s).
METRICS: tuple[str, ...] = ("latency_ms", "energy_mj", "throughput_ips")


def _codes(values: Sequence[str], vocab: list[str] | None = None) -> tuple[np.ndarray, list[str]]:
    vocab = list(vocab) if vocab is not None else sorted(set(values))
    index = {v: i for i, v in enumerate(vocab)}
    for v in values:
        if v not in index:
            index[v] = len(vocab)
            vocab.append(v)
    return np.fromiter((index[v] for v in values), dtype=np.int32, count=len(values)), vocab


@dataclass
class TrainingSet:
    """Columns of the training table (equal-length numpy arrays) and their vocabularies.

    ``device[i]`` is ``devices[device_code[i]]`` etc.; use :meth:`column` for decoded strings,
    :meth:`rows` for dicts, :meth:`select` to filter. ``meta`` carries the header (sources with
    attribution, build report).
    """

    device_code: np.ndarray
    spec_code: np.ndarray
    design_code: np.ndarray
    precision_code: np.ndarray
    metric_code: np.ndarray
    source_code: np.ndarray
    value: np.ndarray
    devices: list[str]
    specs: list[str]
    designs: list[str] = field(default_factory=lambda: [""])
    sources: list[str] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_rows(cls, rows: Sequence[tuple], meta: dict | None = None) -> "TrainingSet":
        """Rows of (device, spec, precision, metric, value, source[, design])."""
        rows = sorted(rows, key=lambda r: (r[5], r[0], r[1], r[6] if len(r) > 6 else "", r[2], r[3]))
        dev, devices = _codes([r[0] for r in rows])
        spec, specs = _codes([r[1] for r in rows], _stable_order([r[1] for r in rows]))
        design, designs = _codes([r[6] if len(r) > 6 else "" for r in rows], [""])
        prec, _ = _codes([r[2] for r in rows], list(PRECISIONS))
        metric, _ = _codes([r[3] for r in rows], list(METRICS))
        src, sources = _codes([r[5] for r in rows], _stable_order([r[5] for r in rows]))
        bad = {r[2] for r in rows} - set(PRECISIONS) | {r[3] for r in rows} - set(METRICS)
        if bad:
            raise ValueError(f"unknown precision/metric {sorted(bad)}")
        return cls(dev, spec, design, prec, metric, src, np.asarray([r[4] for r in rows], dtype=np.float32),
                   devices, specs, designs, sources, dict(meta or {}))

    @classmethod
    def concat(cls, parts: Sequence["TrainingSet"]) -> "TrainingSet":
        """One table from several (vocabularies merged)."""
        devices: list[str] = []
        specs: list[str] = []
        designs: list[str] = [""]
        sources: list[str] = []
        cols: dict[str, list[np.ndarray]] = {k: [] for k in ("d", "s", "g", "p", "m", "o", "v")}
        for t in parts:
            for vocab_new, vocab_old, key, codes in ((devices, t.devices, "d", t.device_code),
                                                      (specs, t.specs, "s", t.spec_code),
                                                      (designs, t.designs, "g", t.design_code),
                                                      (sources, t.sources, "o", t.source_code)):
                pos = {v: i for i, v in enumerate(vocab_new)}
                remap = np.empty(len(vocab_old), dtype=np.int32)
                for i, v in enumerate(vocab_old):
                    if v not in pos:
                        pos[v] = len(vocab_new)
                        vocab_new.append(v)
                    remap[i] = pos[v]
                cols[key].append(remap[codes] if len(codes) else codes.astype(np.int32))
            cols["p"].append(t.precision_code)
            cols["m"].append(t.metric_code)
            cols["v"].append(t.value)
        cat = {k: (np.concatenate(v) if v else np.zeros(0)) for k, v in cols.items()}
        meta = {}
        for t in parts:
            meta.update(t.meta)
        return cls(cat["d"].astype(np.int32), cat["s"].astype(np.int32), cat["g"].astype(np.int32),
                   cat["p"].astype(np.int32), cat["m"].astype(np.int32), cat["o"].astype(np.int32),
                   cat["v"].astype(np.float32), devices, specs, designs, sources, meta)

    # ------------------------------------------------------------------ (de)serialisation
    def save(self, path: str | Path) -> None:
        """Write the ``edgepass.training-set/1`` npz (compressed)."""
        header = {"format": FORMAT, "devices": self.devices, "designs": self.designs, "sources": self.sources,
                  "precisions": list(PRECISIONS), "metrics": list(METRICS), "n_rows": len(self), "meta": self.meta}
        small = lambda a, n: a.astype(np.uint8 if n < 256 else np.uint16 if n < 65536 else np.int32)  # noqa: E731
        spec_blob = "\n".join(self.specs).encode()
        with open(path, "wb") as fh:
            np.savez_compressed(
                fh, header=np.frombuffer(json.dumps(header, separators=(",", ":")).encode(), dtype=np.uint8),
                specs=np.frombuffer(spec_blob, dtype=np.uint8),
                device=small(self.device_code, len(self.devices)), spec=self.spec_code.astype(np.int32),
                design=small(self.design_code, len(self.designs)), precision=self.precision_code.astype(np.uint8),
                metric=self.metric_code.astype(np.uint8), source=self.source_code.astype(np.uint8),
                value=self.value.astype(np.float32))

    @classmethod
    def read(cls, src: str | Path | bytes) -> "TrainingSet":
        """Read an npz written by :meth:`save` (path or bytes); ``allow_pickle`` stays off."""
        fh = io.BytesIO(src) if isinstance(src, (bytes, bytearray)) else open(src, "rb")
        with fh, np.load(fh, allow_pickle=False) as z:
            header = json.loads(z["header"].tobytes().decode())
            if header.get("format") != FORMAT:
                raise ValueError(f"training set has format {header.get('format')!r}, expected {FORMAT}")
            specs = z["specs"].tobytes().decode().split("\n") if z["specs"].size else []
            return cls(z["device"].astype(np.int32), z["spec"].astype(np.int32), z["design"].astype(np.int32),
                       z["precision"].astype(np.int32), z["metric"].astype(np.int32), z["source"].astype(np.int32),
                       z["value"].astype(np.float32), header["devices"], specs, header["designs"],
                       header["sources"], header.get("meta", {}))

    # ------------------------------------------------------------------ access
    def __len__(self) -> int:
        return int(self.value.shape[0])

    def column(self, name: str) -> list[str] | np.ndarray:
        """Decoded column: device, spec, design, precision, metric, source (lists) or value (array)."""
        if name == "value":
            return self.value
        vocab, codes = {
            "device": (self.devices, self.device_code), "spec": (self.specs, self.spec_code),
            "design": (self.designs, self.design_code), "precision": (PRECISIONS, self.precision_code),
            "metric": (METRICS, self.metric_code), "source": (self.sources, self.source_code),
        }[name]
        return [vocab[i] for i in codes]

    def rows(self) -> Iterator[dict[str, Any]]:
        """Rows as dicts: device, spec, design, precision, metric, value, source."""
        for i in range(len(self)):
            yield {"device": self.devices[self.device_code[i]], "spec": self.specs[self.spec_code[i]],
                   "design": self.designs[self.design_code[i]], "precision": PRECISIONS[self.precision_code[i]],
                   "metric": METRICS[self.metric_code[i]], "value": float(self.value[i]),
                   "source": self.sources[self.source_code[i]]}

    def mask(self, *, device: str | Sequence[str] | None = None, space: str | None = None,
             metric: str | None = None, precision: str | None = None, source: str | None = None) -> np.ndarray:
        """Boolean mask of rows matching every given filter (``space`` = spec prefix, e.g. nb201)."""
        m = np.ones(len(self), dtype=bool)
        if device is not None:
            want = {device} if isinstance(device, str) else set(device)
            m &= np.isin(self.device_code, [i for i, d in enumerate(self.devices) if d in want])
        if space is not None:
            ok = np.array([s.split(":", 1)[0].split("@", 1)[0] == space for s in self.specs] + [False])
            m &= ok[self.spec_code]
        if metric is not None:
            m &= self.metric_code == METRICS.index(metric)
        if precision is not None:
            m &= self.precision_code == PRECISIONS.index(precision)
        if source is not None:
            m &= np.isin(self.source_code, [i for i, s in enumerate(self.sources) if s == source])
        return m

    def select(self, **filters) -> "TrainingSet":
        """Sub-table of the rows matching :meth:`mask` (vocabularies kept)."""
        m = self.mask(**filters)
        return TrainingSet(self.device_code[m], self.spec_code[m], self.design_code[m], self.precision_code[m],
                           self.metric_code[m], self.source_code[m], self.value[m], self.devices, self.specs,
                           self.designs, self.sources, self.meta)

    def counts(self, by: str = "source") -> dict[str, int]:
        """Row counts per value of a string column."""
        vocab, codes = {"source": (self.sources, self.source_code), "device": (self.devices, self.device_code),
                        "metric": (list(METRICS), self.metric_code),
                        "precision": (list(PRECISIONS), self.precision_code)}[by]
        n = np.bincount(codes, minlength=len(vocab)) if len(codes) else np.zeros(len(vocab), dtype=int)
        return {v: int(k) for v, k in zip(vocab, n) if k}

    def spaces(self) -> dict[str, int]:
        """Distinct architectures (spec strings with rows) per design space."""
        out: dict[str, int] = {}
        for code in np.unique(self.spec_code):
            sp = self.specs[code].split(":", 1)[0].split("@", 1)[0]
            out[sp] = out.get(sp, 0) + 1
        return out


def _stable_order(values: Sequence[str]) -> list[str]:
    return list(dict.fromkeys(values))
