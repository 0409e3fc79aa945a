"""What merging the workers' histograms costs a cell's master, and what recording costs a
worker: synthetic histograms, as W workers would ship them (README, "Load workers").

    python scripts/merge_cost.py [--workers 1 2 4 8] [--requests 100000] [--repeats 30]

For each W, the W histograms of a cell with `--requests` replies in all (latencies
log-normal around 1 ms with a tail to seconds, a different spread per worker) are encoded as
the workers send them; the master's part is then timed: decode and add all W, read the
percentiles, encode the merge for the result file. Medians over `--repeats`. Printed: the
encoded size per worker, the master's milliseconds per cell, its CPU per request of the
cell, and the share of one core it would take if cells of 1 s came back to back.
A worker's part is timed too: `Latencies.record` per reply, the cost on the load path.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

from wiremark.harness.histogram import Latencies


def worker_samples(rng: np.random.Generator, n: int, worker: int) -> np.ndarray:
    body = rng.lognormal(np.log(0.8 + 0.15 * worker), 0.4 + 0.05 * worker, n)
    tail = rng.uniform(50.0, 2000.0, max(1, n // 1000))  # stalls: a long, sparse tail
    return np.concatenate([body, tail])


def timed_ms(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000.0)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--requests", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=30)
    args = parser.parse_args()
    rng = np.random.default_rng(0)

    print(f"master: merging the histograms of one cell of {args.requests:,} replies")
    print(f"{'workers':>7} {'KB/worker':>9} {'ms/cell':>8} {'ns/request':>10} {'core@1s':>8}")
    for w in args.workers:
        encoded = [
            Latencies.of(worker_samples(rng, args.requests // w, i)).encode() for i in range(w)
        ]

        def merge(encoded: list[str] = encoded) -> None:
            merged = Latencies.merged(encoded)
            merged.summary()
            merged.encode()

        ms = timed_ms(merge, args.repeats)
        size = statistics.mean(len(e) for e in encoded) / 1024
        per_request_ns = ms * 1e6 / args.requests
        print(f"{w:>7} {size:>9.1f} {ms:>8.2f} {per_request_ns:>10.1f} {ms / 1000:>8.2%}")

    values = worker_samples(rng, 200_000, 0)
    hist = Latencies()
    start = time.perf_counter()
    for ms in values:
        hist.record(float(ms))
    per = (time.perf_counter() - start) / values.size * 1e6
    print(f"worker: Latencies.record {per:.2f} us per reply ({values.size:,} replies)")


if __name__ == "__main__":
    main()
