"""The gunicorn entry point of the HTTP benchmark: ``benchmarks.wsgi:application``
is the contender named by ``BENCH_CONTENDER``, on the Redis at ``BENCH_REDIS_URL``.
The cached contenders count their view runs in Redis, where the benchmark reads
them to check that the load was served from the cache."""

from __future__ import annotations

import os

from .contenders import build

application = build(
    os.environ["BENCH_CONTENDER"], os.environ["BENCH_REDIS_URL"], shared_counters=True
).app
