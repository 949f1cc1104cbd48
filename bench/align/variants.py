"""Every published definition of CKNNA and SVCCA on the same features, side by side.

Features: a shared latent Z (N, r) seen by two "models" through different random maps plus
independent noise and a common offset per side (real encoders' features share a large mean
direction), A = Z W_a + s E_a + o m_a and B = Z W_b + s E_b + o m_b, so the sides are related
but not identical (the situation the metrics are for); the offset is where row centring and
double centring part. Each variant runs on the same arrays in the same
process; the table shows how far apart the definitions are, which is what a user comparing
against a published table needs to know.

    PYTHONPATH=src python bench/align/variants.py [--n 2000] [--d 256] [--k 10]

Writes JSON (default bench/align/results-variants.json).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from paperlab.align.metrics import VARIANTS, mutual_knn, score

HERE = Path(__file__).resolve().parent


def features(
    n: int, d: int, rank: int, noise: float, offset: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    z = rng.standard_normal((n, rank))
    a = z @ rng.standard_normal((rank, d)) + noise * rng.standard_normal((n, d))
    b = z @ rng.standard_normal((rank, d)) + noise * rng.standard_normal((n, d))
    a += offset * rng.standard_normal(d)
    b += offset * rng.standard_normal(d)
    return a.astype(np.float32), b.astype(np.float32)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--d", type=int, default=256)
    ap.add_argument("--rank", type=int, default=32, help="dimension of the shared latent")
    ap.add_argument("--noise", type=float, default=4.0, help="noise scale per feature")
    ap.add_argument("--offset", type=float, default=8.0, help="scale of each side's mean vector")
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", type=Path, default=HERE / "results-variants.json")
    args = ap.parse_args()

    a, b = features(args.n, args.d, args.rank, args.noise, args.offset, args.seed)
    rows = [{"metric": "mutual_knn", "variant": "-", "score": mutual_knn(a, b, k=args.k),
             "seconds": float("nan")}]
    for name, variants in VARIANTS.items():
        for variant in variants:
            t0 = time.perf_counter()
            value = score(name, a, b, k=args.k, variant=variant)
            rows.append({"metric": name, "variant": variant, "score": value,
                         "seconds": time.perf_counter() - t0})
    print(f"N={args.n} D={args.d} latent rank={args.rank} noise={args.noise} offset={args.offset} "
          f"k={args.k}")
    print(f"{'metric':<11} {'variant':<15} {'score':>8} {'seconds':>8}")
    for r in rows:
        print(f"{r['metric']:<11} {r['variant']:<15} {r['score']:8.4f} {r['seconds']:8.2f}")
    args.json.write_text(json.dumps({"config": {k: (str(v) if isinstance(v, Path) else v)
                                                for k, v in vars(args).items()},
                                     "rows": rows}, indent=2))
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
