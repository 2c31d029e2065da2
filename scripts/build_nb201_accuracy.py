"""Write edgepass/data/zoo/nb201_cifar10_valid.u16.gz: NAS-Bench-201 CIFAR-10 validation accuracy
(cifar10-valid split, 200 epochs, averaged over seeds) of all 15,625 cells, in edgepass's code order
(base-5 digits of the ops in arch-string edge order), as uint16 hundredths of a percent.

Source: ../shared/data/nas_landscapes/cifar10_avg.csv (NAS-Landscapes, MIT; numbers from
NATS-Bench / NAS-Bench-201, MIT) — see edgepass/data/zoo/README.md.

    python scripts/build_nb201_accuracy.py [--data ../shared/data]
"""
from __future__ import annotations

import argparse
import csv
import gzip
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def main(argv=None) -> int:
    sys.path.insert(0, str(ROOT))
    from edgepass.zoo import nb201

    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data"))
    args = ap.parse_args(argv)
    acc = np.full(nb201.N_ARCHS, np.nan)
    with open(Path(args.data) / "nas_landscapes" / "cifar10_avg.csv") as f:
        for row in csv.DictReader(f):
            acc[nb201.code_of(nb201.parse_arch(row["arch_str"], row["arch_str"]))] = float(row["valid-accuracy"])
    assert not np.isnan(acc).any()
    out = ROOT / "edgepass" / "data" / "zoo" / "nb201_cifar10_valid.u16.gz"
    out.write_bytes(gzip.compress(np.round(acc * 100).astype("<u2").tobytes(), mtime=0))
    print(f"wrote {out} ({out.stat().st_size} bytes); best {acc.max():.2f} %", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
