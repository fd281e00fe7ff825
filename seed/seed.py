"""Seed a signwave database: create or upgrade the schema, then add records and keys.

    python seed/seed.py                       # 100,000 records and 100 keys
    python seed/seed.py --records 5000 --keys 10
    python seed/seed.py --import seed/records.jsonl

The target database is SIGNWAVE_DATABASE_URL (default: sqlite:///signwave.db).
"""

from __future__ import annotations

import argparse
import subprocess
import sys


def signwave(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "signwave", *args], check=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=100_000, help="random payloads to add")
    parser.add_argument("--keys", type=int, default=100, help="RSA-2048 keys to generate")
    parser.add_argument(
        "--import",
        dest="files",
        action="append",
        default=[],
        help="also import a JSON Lines or CSV records file (repeatable)",
    )
    args = parser.parse_args()
    try:
        signwave("db", "init")
        signwave("seed", "--records", str(args.records), "--keys", str(args.keys))
        for path in args.files:
            signwave("records", "import", path)
    except subprocess.CalledProcessError as exc:
        sys.exit(exc.returncode)


if __name__ == "__main__":
    main()
