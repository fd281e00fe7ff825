"""End-to-end signing rate of a real signwave run, against the raw RSA signing rate.

    python -m bench.throughput --records 100000 --keys 100 --batch-size 1000 --workers 2
    python -m bench.throughput --database-url postgresql+psycopg://postgres@127.0.0.1/postgres
    python -m bench.throughput --batch-size 100 --repeat 3

The raw rate is measured with the same key size, padding and number of
processes, before and after each run (it drifts on a virtual machine), and
each run is compared with the mean of the two around it. With ``--repeat``
the median ratio is printed too. Prints numbers; asserts nothing about time.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics

from bench.common import fresh_database, raw_sign_rate, run_workers, seed
from signwave.settings import Settings, signing_processes

RAW_COUNT = 20_000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--keys", type=int, default=100)
    parser.add_argument("--batch-size", type=int, default=1000)
    parser.add_argument("--workers", type=int, default=signing_processes())
    parser.add_argument("--repeat", type=int, default=1, help="runs, each on a fresh database")
    parser.add_argument(
        "--database-url",
        default=None,
        help="sqlite (default: a temporary file) or a PostgreSQL server URL; "
        "a fresh database is created on that server",
    )
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    parser.add_argument(
        "--chain-seconds",
        type=float,
        default=Settings().chain_seconds,
        help="SIGNWAVE_CHAIN_SECONDS of the workers; 0 turns chains off",
    )
    args = parser.parse_args()

    cores = os.cpu_count() or 1
    print(
        f"machine: {platform.processor() or platform.machine()}, {cores} CPUs, "
        f"Python {platform.python_version()}"
    )
    ratios: list[float] = []
    raw_before = raw_sign_rate(args.workers, count=RAW_COUNT)
    for run in range(1, args.repeat + 1):
        with fresh_database(args.database_url) as url:
            seconds = seed(url, args.records, args.keys)
            settings = Settings(
                database_url=url,
                redis_url=args.redis_url,
                batch_size=args.batch_size,
                max_in_flight=2 * args.workers,
                chain_seconds=args.chain_seconds,
            )
            result = run_workers(settings, args.records, args.workers)
        raw_after = raw_sign_rate(args.workers, count=RAW_COUNT)
        raw = (raw_before + raw_after) / 2
        rate = args.records / result["seconds"]
        ratios.append(rate / raw)
        print(
            f"run {run}: seed --records {args.records} --keys {args.keys}: {seconds:.1f} s; "
            f"end to end ({url.split(':')[0]}, batch {args.batch_size}, "
            f"chains {args.chain_seconds:g} s, "
            f"{args.workers} workers): {rate:,.0f} records/s over {result['seconds']:.1f} s; "
            f"raw RSA-2048 PSS, {args.workers} processes: {raw:,.0f} signatures/s "
            f"(before {raw_before:,.0f}, after {raw_after:,.0f}); "
            f"ratio {rate / raw:.3f}; CPU idle {result['cpu_idle']:.1%}, "
            f"steal {result['cpu_steal']:.1%}; "
            f"worker peak RSS {result['worker_peak_rss_kib'] / 1024:.0f} MiB"
        )
        raw_before = raw_after
    if len(ratios) > 1:
        print(
            f"ratio end-to-end / raw: median {statistics.median(ratios):.3f} of {len(ratios)} runs"
        )
    else:
        print(f"ratio end-to-end / raw: {ratios[0]:.3f}")


if __name__ == "__main__":
    main()
