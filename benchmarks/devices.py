"""Monotonicity across devices: rank correlation (Spearman, Kendall) of latency between every pair of
devices that measured the same architectures, per design space -- the seed paper's observation that
latency rankings carry over from a proxy device -- and the same for our own CPU configurations.

    python benchmarks/devices.py [--min-common 30] [--kendall-sample 2000] [--out benchmarks/out]

Data: ``edgepass.dataset.load()`` (public table + our onnxruntime CPU measurements). A device
series is (device id, precision, metric); throughput (images/s, Accel-NASBench GPUs/TPUs) enters
as its inverse (ms per image) so that every series ranks "slower = larger". Spearman uses all
common architectures (average ranks for ties); Kendall's tau-b uses at most ``--kendall-sample``
of them (seeded sample). Pairs with fewer than ``--min-common`` common architectures are skipped
(``--min-common-tv`` for the 21 real CNNs of the ``tv`` space).

Writes ``devices_monotonicity.json`` (every pair) and ``devices_monotonicity.png`` (one heatmap of
Spearman rho per space; our CPU series marked with '*') under ``--out``.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from itertools import combinations
from pathlib import Path

import numpy as np

from edgepass.predictors.stats import spearman

OUT = Path(__file__).resolve().parent / "out"
SPACES = ("nb201", "fbnet", "ofa", "anb", "tv")
LOCAL = "local/"


# ---------------------------------------------------------------------- statistics (numpy)
def kendall_tau_b(x: np.ndarray, y: np.ndarray) -> float:
    """Kendall's tau-b: scipy's O(n log n) version when scipy is installed, else :func:`kendall_numpy`."""
    try:
        from scipy.stats import kendalltau
    except ImportError:
        return kendall_numpy(x, y)
    return float(kendalltau(x, y).statistic)


def kendall_numpy(x: np.ndarray, y: np.ndarray) -> float:
    """Kendall's tau-b by direct pair counting (O(n^2) in blocks; n <= a few thousand)."""
    n = len(x)
    conc = disc = tx = ty = 0
    block = 512
    for s in range(0, n, block):
        dx = np.sign(x[s:s + block, None] - x[None, :])
        dy = np.sign(y[s:s + block, None] - y[None, :])
        idx = np.arange(s, min(s + block, n))[:, None] < np.arange(n)[None, :]  # each pair once (i < j)
        p = dx * dy
        conc += int(((p > 0) & idx).sum())
        disc += int(((p < 0) & idx).sum())
        tx += int(((dx == 0) & (dy != 0) & idx).sum())
        ty += int(((dy == 0) & (dx != 0) & idx).sum())
    den = np.sqrt((conc + disc + tx) * (conc + disc + ty))
    return float((conc - disc) / den) if den > 0 else float("nan")


# ---------------------------------------------------------------------- series
def series_by_space(ts) -> dict[str, dict[str, dict[int, float]]]:
    """space -> series name -> {spec code: value (ms, larger = slower)}."""
    from edgepass.dataset import METRICS, PRECISIONS

    space_of = np.array([s.split(":", 1)[0].split("@", 1)[0] for s in ts.specs] + [""])
    out: dict[str, dict[str, dict[int, float]]] = {}
    key = np.stack([ts.device_code, ts.precision_code, ts.metric_code], axis=1)
    uniq, inverse = np.unique(key, axis=0, return_inverse=True)
    inverse = inverse.ravel()
    for u, (dcode, pcode, mcode) in enumerate(uniq):
        rows = np.flatnonzero(inverse == u)
        dev, prec, metric = ts.devices[dcode], PRECISIONS[pcode], METRICS[mcode]
        if metric == "energy_mj":
            continue
        vals = ts.value[rows].astype(np.float64)
        if metric == "throughput_ips":
            vals = 1000.0 / vals
        name = dev if not dev.startswith(LOCAL) else f"{dev}[{prec}]"
        if metric == "throughput_ips":
            name += "[1/thr]"
        elif dev.startswith("anb/zcu102") or dev.startswith("anb/vck190"):
            name += "[lat]"
        spaces = space_of[ts.spec_code[rows]]
        for sp in np.unique(spaces):
            sel = spaces == sp
            out.setdefault(str(sp), {})[name] = dict(zip(ts.spec_code[rows][sel].tolist(), vals[sel].tolist()))
    return out


def pair_stats(a: dict[int, float], b: dict[int, float], min_common: int, kendall_n: int, rng) -> dict | None:
    common = sorted(set(a) & set(b))
    if len(common) < min_common:
        return None
    x = np.array([a[k] for k in common])
    y = np.array([b[k] for k in common])
    rho = spearman(x, y)
    if len(common) > kendall_n:
        pick = rng.choice(len(common), kendall_n, replace=False)
        xk, yk = x[pick], y[pick]
    else:
        xk, yk = x, y
    return {"n": len(common), "spearman": rho, "kendall": kendall_tau_b(xk, yk), "kendall_n": len(xk)}


# ---------------------------------------------------------------------- heatmap PNG (PIL)
def _color(v: float) -> tuple[int, int, int]:
    """Spearman rho in [0, 1] -> colour (dark blue .. teal .. yellow); NaN -> light grey."""
    if v != v:
        return (225, 225, 225)
    t = min(max(v, 0.0), 1.0)
    stops = [(0.0, (48, 18, 59)), (0.5, (33, 145, 140)), (0.8, (122, 209, 81)), (1.0, (253, 231, 37))]
    for (t0, c0), (t1, c1) in zip(stops, stops[1:]):
        if t <= t1:
            f = (t - t0) / (t1 - t0)
            return tuple(int(c0[i] + f * (c1[i] - c0[i])) for i in range(3))
    return stops[-1][1]


def heatmap_panel(title: str, names: list[str], mat: np.ndarray, cell: int = 11):
    from PIL import Image, ImageDraw, ImageFont

    font = ImageFont.load_default()
    k = len(names)
    labels = k <= 80  # beyond that the labels would overlap: cells only, order as in the JSON
    if not labels:
        cell = 5
        title += " (series sorted by id; labels omitted)"
    label_w = max(6 * len(n) for n in names) + 10 if labels else 10
    w, h = max(label_w + k * cell + 20, 6 * len(title) + 10), label_w + k * cell + 30
    img = Image.new("RGB", (w, h), "white")
    draw = ImageDraw.Draw(img)
    draw.text((5, 5), title, fill="black", font=font)
    top = 25 + label_w
    for i, n in enumerate(names):
        if labels:
            draw.text((5, top + i * cell), n[: label_w // 6], fill="black", font=font)
            txt = Image.new("RGB", (label_w, cell), "white")
            ImageDraw.Draw(txt).text((2, 0), n[: label_w // 6], fill="black", font=font)
            txt = txt.rotate(90, expand=True)
            img.paste(txt, (label_w + i * cell, 25))
        for j in range(k):
            x0, y0 = label_w + j * cell, top + i * cell
            draw.rectangle([x0, y0, x0 + cell - 1, y0 + cell - 1], fill=_color(mat[i, j]))
    return img


def legend():
    from PIL import Image, ImageDraw, ImageFont

    font = ImageFont.load_default()
    img = Image.new("RGB", (420, 40), "white")
    d = ImageDraw.Draw(img)
    for x in range(300):
        d.line([(10 + x, 5), (10 + x, 20)], fill=_color(x / 299))
    for v in (0.0, 0.5, 0.8, 1.0):
        d.text((10 + int(v * 299) - 8, 24), f"{v:.1f}", fill="black", font=font)
    d.text((320, 8), "Spearman rho", fill="black", font=font)
    return img


def write_png(panels, path: Path) -> None:
    from PIL import Image

    imgs = [legend()] + panels
    w = max(i.width for i in imgs)
    h = sum(i.height for i in imgs) + 10 * len(imgs)
    out = Image.new("RGB", (w, h), "white")
    y = 0
    for im in imgs:
        out.paste(im, (0, y))
        y += im.height + 10
    out.save(path)


# ---------------------------------------------------------------------- main
def main(argv=None) -> int:
    from tqdm import tqdm

    from edgepass import dataset

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--min-common", type=int, default=30)
    ap.add_argument("--min-common-tv", type=int, default=15,
                    help="minimum for the tv space (only 21 real CNNs are shared with mobile-ml-benchmark)")
    ap.add_argument("--kendall-sample", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args(argv)
    t0 = time.time()
    rng = np.random.default_rng(args.seed)
    ts = dataset.load()
    by_space = series_by_space(ts)
    results: dict[str, list[dict]] = {}
    jobs = []
    for sp in SPACES:
        names = sorted(by_space.get(sp, {}))
        jobs += [(sp, a, b) for a, b in combinations(names, 2)]
    for sp, a, b in tqdm(jobs, desc="device pairs", unit="pair", file=sys.stderr):
        min_common = min(args.min_common, args.min_common_tv) if sp == "tv" else args.min_common
        st = pair_stats(by_space[sp][a], by_space[sp][b], min_common, args.kendall_sample, rng)
        if st is not None:
            results.setdefault(sp, []).append({"a": a, "b": b, **st})

    summary_rows, panels = [], []
    for sp in SPACES:
        pairs = results.get(sp, [])
        if not pairs:
            continue
        rho = np.array([p["spearman"] for p in pairs])
        tau = np.array([p["kendall"] for p in pairs])
        names = sorted({p["a"] for p in pairs} | {p["b"] for p in pairs})
        summary_rows.append({
            "space": sp, "series": len(names), "pairs": len(pairs),
            "spearman_median": float(np.nanmedian(rho)), "spearman_min": float(np.nanmin(rho)),
            "share_rho>=0.9": float(np.mean(rho >= 0.9)), "kendall_median": float(np.nanmedian(tau)),
            "kendall_min": float(np.nanmin(tau)),
        })
        pos = {n: i for i, n in enumerate(names)}
        mat = np.full((len(names), len(names)), np.nan)
        np.fill_diagonal(mat, 1.0)
        for p in pairs:
            mat[pos[p["a"]], pos[p["b"]]] = mat[pos[p["b"]], pos[p["a"]]] = p["spearman"]
        label = [("* " if n.startswith(LOCAL) else "") + n for n in names]
        panels.append(heatmap_panel(f"{sp}: Spearman rho of latency, {len(names)} series, {len(pairs)} pairs "
                                    f"(>= {min(args.min_common, args.min_common_tv) if sp == 'tv' else args.min_common} common archs)", label, mat))

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from _common import print_table

    print("Monotonicity: rank correlation of latency between device pairs, per design space")
    print_table(summary_rows, ["space", "series", "pairs", "spearman_median", "spearman_min", "share_rho>=0.9",
                               "kendall_median", "kendall_min"])

    # our CPU configs: among themselves, and against the public devices
    local_rows = []
    for sp in SPACES:
        for p in results.get(sp, []):
            if p["a"].startswith(LOCAL) and p["b"].startswith(LOCAL):
                local_rows.append({"space": sp, "a": p["a"], "b": p["b"], "n": p["n"],
                                   "spearman": p["spearman"], "kendall": p["kendall"]})
    print("\nOur CPU configurations (onnxruntime, this machine) against each other")
    print_table(local_rows, ["space", "a", "b", "n", "spearman", "kendall"])
    vs_rows = []
    for sp in SPACES:
        for loc in sorted({n for p in results.get(sp, []) for n in (p["a"], p["b"]) if n.startswith(LOCAL)}):
            other = [p for p in results.get(sp, []) if (p["a"] == loc) != (p["b"] == loc)
                     and not (p["a"].startswith(LOCAL) and p["b"].startswith(LOCAL))]
            if not other:
                continue
            best = max(other, key=lambda p: p["spearman"])
            rho = np.array([p["spearman"] for p in other])
            vs_rows.append({"space": sp, "ours": loc, "public_devices": len(other), "n_median": int(np.median([p["n"] for p in other])),
                            "spearman_median": float(np.median(rho)), "spearman_min": float(rho.min()),
                            "best_public": best["b"] if best["a"] == loc else best["a"], "best_rho": best["spearman"]})
    print("\nOur CPU configurations against the public devices (same architectures)")
    print_table(vs_rows, ["space", "ours", "public_devices", "n_median", "spearman_median", "spearman_min",
                          "best_public", "best_rho"])

    args.out.mkdir(parents=True, exist_ok=True)
    payload = {"min_common": args.min_common, "kendall_sample": args.kendall_sample, "seed": args.seed,
               "summary": summary_rows, "local": local_rows, "local_vs_public": vs_rows, "pairs": results}
    jpath = args.out / "devices_monotonicity.json"
    jpath.write_text(json.dumps(payload, indent=1))
    ppath = args.out / "devices_monotonicity.png"
    write_png(panels, ppath)
    print(f"\nwrote {jpath} and {ppath} in {time.time() - t0:.1f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
