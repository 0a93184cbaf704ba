"""The soak benchmark, short (``python -m benchmarks.soak`` for the real one):
under Redis killed, stopped and read-only, no answer is wrong, no 5xx comes from
the cache, and the cache served hits. Latency is the benchmark's business, not
asserted here. And the soak's judge catches the wrong answers it looks for."""

from __future__ import annotations

import email.message
import json
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.soak_app import make_body
from benchmarks.soak_load import OK, WRONG, Request, judge

ROOT = Path(__file__).resolve().parent.parent


def test_a_short_soak_under_redis_faults(redis_server, tmp_path):
    figures = tmp_path / "soak.json"
    command = [
        sys.executable,
        "-m",
        "benchmarks.soak",
        "--seconds=10",
        "--workers=2",
        "--concurrency=8",
        f"--redis-server={redis_server.binary}",
        f"--json={figures}",
    ]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)
    report = done.stdout + done.stderr
    assert figures.exists(), report
    summary = json.loads(figures.read_text())
    assert summary["wrong"] == 0, report
    assert summary["cache_5xx"] == 0, report
    assert summary["no_answer"] == 0, report
    assert summary["hits"] > 0, report
    assert done.returncode == 0, report


def _headers(**fields: str) -> email.message.Message:
    message = email.message.Message()
    for name, value in fields.items():
        message[name.replace("_", "-")] = value
    return message


VARY = Request("vary", "GET", "/vary/1", {"Accept-Language": "fr"}, "fr")
COOKIE = Request("cookie", "GET", "/cookie/1", {"X-Soak-Client": "c0-1"}, "c0-1")


@pytest.mark.parametrize(
    ("request_", "status", "headers", "body", "outcome"),
    [
        pytest.param(VARY, 200, {}, make_body("/vary/1", "fr", "p"), OK, id="right"),
        pytest.param(VARY, 200, {}, make_body("/vary/1", "de", "p"), WRONG, id="other-variant"),
        pytest.param(VARY, 200, {}, make_body("/vary/2", "fr", "p"), WRONG, id="other-url"),
        pytest.param(
            VARY, 200, {}, make_body("/vary/1", "fr", "p").replace(b'"p"', b'"q"'), WRONG,
            id="bad-checksum",
        ),
        pytest.param(VARY, 304, {}, b"", WRONG, id="304-unconditional"),
        pytest.param(
            COOKIE, 200, {"Set-Cookie": "session=c0-1", "X-Cache": "HIT"},
            make_body("/cookie/1", "c0-1", "p"), WRONG, id="personal-hit",
        ),
        pytest.param(
            COOKIE, 200, {"Set-Cookie": "session=c0-2", "X-Cache": "MISS"},
            make_body("/cookie/1", "c0-1", "p"), WRONG, id="other-cookie",
        ),
    ],
)  # fmt: skip
def test_the_judge_catches_wrong_answers(request_, status, headers, body, outcome):
    assert judge(request_, status, _headers(**headers), body)[0] == outcome
