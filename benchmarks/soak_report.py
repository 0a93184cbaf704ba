"""The soak benchmark's figures: per phase of the fault schedule, what the
clients saw (outcomes, latency, X-Cache) and the time the cache added in the
server; and the markdown report of them."""

from __future__ import annotations

import argparse
import collections
import json
import os
import typing as t
from collections.abc import Sequence

from . import report
from .soak_faults import NORMAL, PHASES
from .soak_load import (
    CACHE_5XX,
    FAILURES,
    NO_ANSWER,
    OK,
    ORIGIN_5XX,
    WRONG,
    X_CACHE,
    Sample,
    client_processes,
)

if t.TYPE_CHECKING:
    from .soak import Soak


def _ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:,.1f}"


def _percentiles(values: Sequence[float]) -> dict[str, float | None]:
    """p50, p99 and the worst of ``values``, in seconds (None if there are none)."""
    if not values:
        return {"p50": None, "p99": None, "worst": None}
    return {
        "p50": report.percentile(values, 0.5),
        "p99": report.percentile(values, 0.99),
        "worst": max(values),
    }


def summarize(soak: Soak, socket_timeout: float) -> dict[str, t.Any]:
    """The figures of a run, as JSON-ready values."""
    faults = soak.faults
    by_phase: dict[str, list[Sample]] = collections.defaultdict(list)
    for sample in soak.samples:
        by_phase[faults.phase_at(sample.started)].append(sample)
    added_by_phase: dict[str, list[float]] = collections.defaultdict(list)
    for wall, in_cache, in_app, *_ in soak.timings:
        added_by_phase[faults.phase_at(wall)].append(in_cache - in_app)

    def figures(samples: Sequence[Sample], added: Sequence[float]) -> dict[str, t.Any]:
        outcomes = collections.Counter(sample.outcome for sample in samples)
        latencies = [sample.seconds for sample in samples if sample.outcome != NO_ANSWER]
        return {
            "requests": len(samples),
            "outcomes": {name: outcomes.get(name, 0) for name in (OK, *FAILURES, ORIGIN_5XX)},
            "x_cache": dict(collections.Counter(sample.x_cache or "-" for sample in samples)),
            "latency_seconds": _percentiles(latencies),
            "added_seconds": _percentiles(added),
            "says_stored_within_fault": sum(
                sample.says_stored and faults.within_one_phase(sample.started, sample.ended)
                for sample in samples
            ),
        }

    phases = {phase: figures(by_phase[phase], added_by_phase[phase]) for phase in PHASES}
    every = figures(soak.samples, [value for values in added_by_phase.values() for value in values])
    worst = sorted(soak.timings, key=lambda timing: timing[1] - timing[2], reverse=True)[:8]
    return {
        "seconds": soak.seconds,
        "all": every,
        "phases": phases,
        "failures": sum(every["outcomes"][name] for name in FAILURES),
        "wrong": every["outcomes"][WRONG],
        "cache_5xx": every["outcomes"][CACHE_5XX],
        "no_answer": every["outcomes"][NO_ANSWER],
        "hits": every["x_cache"].get("HIT", 0),
        "added_target_seconds": 2 * socket_timeout,
        "worst_added": [
            {
                "at_s": round(wall - soak.started, 3),
                "phase": faults.phase_at(wall),
                "request": f"{method} {url}",
                "status": status,
                "x_cache": x_cache,
                "cache_status": cache_status,
                "added_ms": round((in_cache - in_app) * 1000, 1),
                "app_ms": round(in_app * 1000, 1),
            }
            for wall, in_cache, in_app, method, url, status, x_cache, cache_status in worst
        ],
        "purges": {
            phase: {
                "ok": sum(code == 0 for at, code in soak.purges if faults.phase_at(at) == phase),
                "failed": sum(
                    code != 0 for at, code in soak.purges if faults.phase_at(at) == phase
                ),
            }
            for phase in PHASES
        },
        "problems": [
            {"at_s": round(problem["at"] - soak.started, 3)}
            | {name: value for name, value in problem.items() if name != "at"}
            for problem in sorted(soak.problems, key=lambda problem: problem["at"])
        ],
        "server_errors": [
            line
            for line in soak.server_log.splitlines()
            if any(mark in line for mark in ("[ERROR]", "[CRITICAL]", "WORKER TIMEOUT"))
        ],
        "phase_starts_s": [
            (round(began - soak.started, 2), phase) for began, phase in faults.phases
        ],
    }


def render(summary: dict[str, t.Any], args: argparse.Namespace, soak: Soak) -> str:
    rows = []
    for name, figures in [*summary["phases"].items(), ("all", summary["all"])]:
        outcomes, x_cache = figures["outcomes"], figures["x_cache"]
        rows.append(
            [
                name,
                f"{figures['requests']:,}",
                f"{outcomes[WRONG]:,}",
                f"{outcomes[CACHE_5XX] + outcomes[ORIGIN_5XX]:,} ({outcomes[CACHE_5XX]:,})",
                f"{outcomes[NO_ANSWER]:,}",
                *(_ms(value) for value in figures["latency_seconds"].values()),
                _ms(figures["added_seconds"]["p99"]),
                _ms(figures["added_seconds"]["worst"]),
                " / ".join(f"{x_cache.get(name, 0):,}" for name in X_CACHE),
                f"{figures['says_stored_within_fault']:,}" if name not in (NORMAL, "all") else "-",
            ]
        )
    headers = [
        "phase",
        "requests",
        "wrong",
        "5xx (cache-caused)",
        "no answer",
        "p50 ms",
        "p99 ms",
        "worst ms",
        "added p99 ms",
        "added worst ms",
        "HIT / STALE / MISS / BYPASS",
        "'stored' claimed",
    ]
    target = summary["added_target_seconds"]
    worst_added = summary["all"]["added_seconds"]["worst"] or 0.0
    lines = [
        "# redis-wsgi-cache soak\n",
        f"- {args.seconds:g} s, gunicorn {args.workers} sync workers, {args.concurrency}"
        f" clients in {client_processes(args.client_processes, args.concurrency)}"
        f" processes, on {os.cpu_count()} CPUs; redis-server {soak.redis_version}"
        f" ({args.redis_server})",
        f"- socket_timeout={args.socket_timeout:g}, breaker_cooldown={args.breaker_cooldown:g}"
        + "".join(f", {name}={value}" for name, value in args.set),
        "- phases began at (s): "
        + ", ".join(f"{at:g} {phase}" for at, phase in summary["phase_starts_s"]),
        "- latency: as the clients saw it (queueing for a worker included); added: time"
        " spent in the cache minus time in the app, measured in the server\n",
        report.table(headers, rows),
        "",
        "Purges (ok / failed): "
        + ", ".join(
            f"{phase} {counts['ok']} / {counts['failed']}"
            for phase, counts in summary["purges"].items()
        ),
        "",
        "Requests where the cache added the most time:\n",
        report.table(
            ["at s", "phase", "request", "status", "X-Cache", "Cache-Status", "added ms", "app ms"],
            [list(item.values()) for item in summary["worst_added"]],
            "rlllllrr",
        ),
        "",
    ]
    if summary["problems"]:
        lines.append(f"First problems ({len(summary['problems'])} kept):\n")
        lines += [f"- {json.dumps(problem)}" for problem in summary["problems"][:20]]
        lines.append("")
    if summary["server_errors"]:
        lines.append(f"gunicorn log: {len(summary['server_errors'])} error lines, first:")
        lines += [f"    {line}" for line in summary["server_errors"][:10]]
        lines.append("")
    verdict = [
        ("wrong answers", summary["wrong"], "0"),
        ("cache-caused 5xx", summary["cache_5xx"], "0"),
        ("requests without an answer", summary["no_answer"], "0"),
    ]
    for label, value, wanted in verdict:
        lines.append(f"{label}: {value:,} (target {wanted}) {'ok' if value == 0 else 'FAILED'}")
    lines.append(
        f"worst added latency: {_ms(worst_added)} ms (target < {_ms(target)} ms)"
        f" {'ok' if worst_added < target else 'MISSED (not enforced)'}"
    )
    return "\n".join(lines)
