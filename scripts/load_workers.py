"""The same iris gRPC cell measured by 1 load worker and by 2, at the same total load
(README, "Load workers"): do the merged percentiles of two workers agree with one's?

    python scripts/load_workers.py [--transport grpc] [--users 8] [--rate 1000]
        [--duration 5] [--pairs 5]

One server (pinned to the first core, as bench pins it), cells pinned to the other core.
Each pair runs the closed-loop cell (`--users` in all) on 1 and on 2 local workers, in a
random order, then the open-loop cell (`--rate` in all) likewise. Printed: medians over the
pairs of req/s, p50 and p99 (merged from the workers' HdrHistograms), the open loop's
uncorrected p99, and the busiest worker's CPU share; and the median ratio 2 workers / 1
within a pair.
"""

from __future__ import annotations

import argparse
import random
import statistics
import subprocess

from wiremark.harness import environment as env
from wiremark.harness.histogram import Latencies
from wiremark.harness.launch import ServerProcess
from wiremark.harness.protocol import CellRequest, CellResult


def cell(args: argparse.Namespace, address: str, workers: int, rate: float, cpus: str | None):
    request = CellRequest(
        args.transport,
        address,
        "iris",
        users=args.users,
        duration=args.duration,
        warmup=1.0,
        rate=rate,
        load_processes=workers,
    )
    done = subprocess.run(request.argv(cpus), capture_output=True, text=True, check=True)
    result = CellResult.from_output(done.stdout)
    unc = result.uncorrected_histogram
    return {
        "rps": result.rps,
        "p50": result.p50,
        "p99": result.p99,
        "unc_p99": Latencies.decode(unc).percentile(99.0) if unc else None,
        "cpu": max(w["client_cpu_share"] for w in result.workers),
        "late": result.late,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--transport", default="grpc")
    parser.add_argument("--users", type=int, default=8)
    parser.add_argument("--rate", type=float, default=1000.0)
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--pairs", type=int, default=5)
    args = parser.parse_args()
    server_cores, client_cores = env.split_cores()
    shared = server_cores == client_cores
    server_cpus = None if shared else env.cpu_list(server_cores)
    client_cpus = None if shared else env.cpu_list(client_cores)
    order = random.Random(0)
    runs: dict[tuple[str, int], list[dict]] = {}
    with ServerProcess(args.transport, ("--models", "iris"), cpus=server_cpus) as server:
        for pair in range(args.pairs):
            for mode, rate in (("closed", 0.0), ("open", args.rate)):
                for workers in order.sample([1, 2], 2):
                    got = cell(args, server.address, workers, rate, client_cpus)
                    runs.setdefault((mode, workers), []).append(got)
                    print(f"pair {pair} {mode:<6} {workers} worker(s): {got}", flush=True)
    print()
    print(f"{args.transport}, iris; medians of {args.pairs} pairs")
    print(
        f"{'mode':<7} {'workers':>7} {'req/s':>8} {'p50 ms':>7} {'p99 ms':>7} "
        f"{'p99 unc':>7} {'cpu max':>7}"
    )
    for (mode, workers), got in sorted(runs.items()):
        med = {k: statistics.median(g[k] for g in got) for k in ("rps", "p50", "p99", "cpu")}
        unc = [g["unc_p99"] for g in got if g["unc_p99"] is not None]
        unc_text = f"{statistics.median(unc):>7.3f}" if unc else f"{'-':>7}"
        print(
            f"{mode:<7} {workers:>7} {med['rps']:>8.0f} {med['p50']:>7.3f} {med['p99']:>7.3f} "
            f"{unc_text} {med['cpu']:>7.2f}"
        )
    for mode in ("closed", "open"):
        one, two = runs[(mode, 1)], runs[(mode, 2)]
        for key in ("rps", "p50", "p99"):
            ratio = statistics.median(b[key] / a[key] for a, b in zip(one, two, strict=True))
            print(f"{mode} {key}: 2 workers / 1 = {ratio:.3f} (median of the pairs)")


if __name__ == "__main__":
    main()
