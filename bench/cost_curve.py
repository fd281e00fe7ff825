"""Per-record pipeline overhead as the table grows: 100,000 against 1,000,000 records.

    python -m bench.cost_curve                      # SQLite
    python -m bench.cost_curve --database-url postgresql+psycopg://postgres@127.0.0.1/postgres

For each size: seed (timed, through the CLI), run real workers to the end,
and report the end-to-end time per record minus the raw signing time per
record (the overhead), plus the worker processes' peak RSS. A step that scans
the whole table shows up as overhead growing with the size. Prints numbers;
asserts nothing about time.
"""

from __future__ import annotations

import argparse

from bench.common import fresh_database, raw_sign_rate, run_workers, seed
from signwave.settings import Settings, signing_processes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="100000,1000000")
    parser.add_argument("--keys", type=int, default=100)
    parser.add_argument("--batch-size", type=int, default=1000)
    parser.add_argument("--workers", type=int, default=signing_processes())
    parser.add_argument("--database-url", default=None)
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    args = parser.parse_args()

    overheads: list[float] = []
    rates: list[float] = []
    for size in (int(s) for s in args.sizes.split(",")):
        # Raw rate measured around each run: it drifts on a VM.
        raw_before = raw_sign_rate(args.workers, count=20_000)
        with fresh_database(args.database_url) as url:
            seeded = seed(url, size, args.keys)
            settings = Settings(
                database_url=url,
                redis_url=args.redis_url,
                batch_size=args.batch_size,
                max_in_flight=2 * args.workers,
            )
            result = run_workers(settings, size, args.workers, timeout=7200)
        raw = (raw_before + raw_sign_rate(args.workers, count=20_000)) / 2
        per_record = result["seconds"] / size
        overhead = per_record - 1 / raw
        overheads.append(overhead)
        rates.append(size / result["seconds"])
        print(
            f"{size:>9,} records: raw {raw:,.0f}/s, seed {seeded:6.1f} s, "
            f"run {result['seconds']:7.1f} s, "
            f"{size / result['seconds']:,.0f} records/s, overhead {overhead * 1e6:6.1f} µs/record, "
            f"worker peak RSS {result['worker_peak_rss_kib'] / 1024:.0f} MiB, "
            f"CPU idle {result['cpu_idle']:.1%}, steal {result['cpu_steal']:.1%}"
        )
    if len(rates) >= 2:
        # The end-to-end rates do not depend on the raw rate's drift between
        # measurements; the overheads do, and a small one can come out negative.
        print(f"end-to-end rate, largest / smallest table: {rates[-1] / rates[0]:.2f}")
        if min(overheads) > 0:
            print(f"overhead per record, largest / smallest: {overheads[-1] / overheads[0]:.2f}")
        else:
            print("overhead per record: within the raw rate's drift at some size")


if __name__ == "__main__":
    main()
