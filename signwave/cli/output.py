"""Human-readable output of status and verify."""

from __future__ import annotations

import click

from signwave.store.status import Status
from signwave.verify import Report


def print_status(s: Status) -> None:
    pct = 100.0 * s.signed / s.records if s.records else 0.0
    click.echo(f"records     {s.records:>10}")
    click.echo(f"signed      {s.signed:>10}  ({pct:.1f} %)")
    click.echo(f"unbatched   {s.unbatched:>10}")
    if s.failed_records:
        click.echo(f"in failed batches {s.failed_records:>4}")
        for batch_id, reason in s.failed_batches:
            click.echo(f"  batch {batch_id} failed: {reason or 'no reason recorded'}")
    click.echo("batches     " + "  ".join(f"{k} {v}" for k, v in s.batches.items()))
    click.echo(f"keys        {s.keys:>10}  ({s.keys_leased} leased now)")
    click.echo(f"signatures/s {s.signatures_per_second:>9.0f}  (last 10 s)")


def print_report(r: Report) -> None:
    click.echo(
        f"records {r.records}, signatures {r.signatures}, leases {r.leases}, "
        f"batch sizes {r.batch_sizes or '-'}"
    )
    for f in r.findings:
        mark = "ok  " if f.count == 0 else "FAIL"
        line = f"  {mark} {f.guarantee:<8} {f.name}: {f.count}"
        if f.count:
            line += f" (e.g. {', '.join(map(str, f.sample[:10]))})"
            if f.detail:
                line += f" [{f.detail}]"
        click.echo(line)
    if r.failed_batches:
        click.echo(f"  FAIL G6       failed batches: {', '.join(map(str, r.failed_batches[:20]))}")
    click.echo("verify: all guarantees hold" if r.ok else "verify: FAILED", err=not r.ok)
