"""Summarize an e2e.sh run as one Markdown table: attnrec, the Python peer, and attnrec / peer.

Usage: python3 bench/e2e_summary.py RESULTS_DIR

Reads RESULTS_DIR/levels.tsv, which e2e.sh writes with one line per service and concurrency.
Its columns are the service, the concurrency, the oha JSON report file (relative to RESULTS_DIR),
the peak RSS during that level in KiB (VmHWM, reset before the level) and the RSS at the end of
the level in KiB.
Uses only the standard library, so it runs with the system Python.
"""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

SERVICES = ("attnrec", "peer")


def latency_percentiles_ms(report: dict) -> tuple[float | None, float | None]:
    """Return p50 and p99 in milliseconds over 2xx responses when oha reports them separately.

    With --stats-success-breakdown, oha 1.16 also reports percentiles of 2xx responses alone.
    Those are preferred, so fast 429 responses do not pull the percentiles down. Without them the
    percentiles cover every response received.
    """
    percentiles = report.get("latencyPercentilesSuccessful") or report.get("latencyPercentiles") or {}
    p50, p99 = percentiles.get("p50"), percentiles.get("p99")
    return (None if p50 is None else p50 * 1000, None if p99 is None else p99 * 1000)


def summarize_level(results_dir: Path, row: dict) -> dict:
    report = json.loads((results_dir / row["report"]).read_text())
    statuses = {str(code): int(count) for code, count in (report.get("statusCodeDistribution") or {}).items()}
    transport_errors = sum(int(count) for count in (report.get("errorDistribution") or {}).values())
    duration = float(report["summary"]["total"])
    ok = statuses.get("200", 0)
    p50, p99 = latency_percentiles_ms(report)
    return {
        "qps": ok / duration if duration > 0 else 0.0,
        "p50": p50,
        "p99": p99,
        "errors": transport_errors + sum(count for code, count in statuses.items() if code not in ("200", "429")),
        "rejected": statuses.get("429", 0),
        "statuses": ", ".join(f"{code}: {count}" for code, count in sorted(statuses.items())) or "none",
        "transport": ", ".join(f"{name}: {count}" for name, count in (report.get("errorDistribution") or {}).items()),
        "peak_rss_mib": int(row["peak_rss_kib"]) / 1024 if row["peak_rss_kib"] else None,
    }


def format_number(value: float | None, decimals: int) -> str:
    return "n/a" if value is None else f"{value:,.{decimals}f}"


def format_ratio(attnrec: float | None, peer: float | None) -> str:
    if attnrec is None or peer is None or peer == 0:
        return "n/a"
    return f"{attnrec / peer:.2f}"


def main() -> None:
    if len(sys.argv) != 2:
        raise SystemExit("usage: e2e_summary.py RESULTS_DIR")
    results_dir = Path(sys.argv[1])
    with (results_dir / "levels.tsv").open(newline="") as file:
        rows = list(csv.DictReader(file, delimiter="\t"))

    levels: dict[int, dict[str, dict]] = {}
    for row in rows:
        levels.setdefault(int(row["concurrency"]), {})[row["service"]] = summarize_level(results_dir, row)

    figures = [
        ("QPS (200 responses/s)", "qps", 1),
        ("p50 latency (ms)", "p50", 1),
        ("p99 latency (ms)", "p99", 1),
        ("errors (no response, or status other than 200 and 429)", "errors", 0),
        ("429 overloaded", "rejected", 0),
        ("peak RSS (MiB)", "peak_rss_mib", 0),
    ]
    print("attnrec / peer above 1 means attnrec's figure is higher: better for QPS, worse for latency "
          "and memory.\n")
    print("| concurrency | figure | attnrec | peer | attnrec / peer |")
    print("|---:|---|---:|---:|---:|")
    for concurrency in sorted(levels):
        by_service = levels[concurrency]
        if any(service not in by_service for service in SERVICES):
            continue
        attnrec, peer = by_service["attnrec"], by_service["peer"]
        for label, key, decimals in figures:
            print(f"| {concurrency} | {label} | {format_number(attnrec[key], decimals)} "
                  f"| {format_number(peer[key], decimals)} | {format_ratio(attnrec[key], peer[key])} |")
        print(f"| {concurrency} | status codes | {attnrec['statuses']} | {peer['statuses']} | |")
        if attnrec["transport"] or peer["transport"]:
            print(f"| {concurrency} | connection errors | {attnrec['transport'] or 'none'} "
                  f"| {peer['transport'] or 'none'} | |")


if __name__ == "__main__":
    main()
