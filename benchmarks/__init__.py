"""Benchmarks of redis-wsgi-cache against its peers, run by hand::

    python -m benchmarks            # everything, two to three minutes
    python -m benchmarks --quick    # fewer rounds, shorter loads: half a minute
    python -m benchmarks --only inprocess --only stampede
    python -m benchmarks.soak          # a minute of mixed load under Redis faults
    python -m benchmarks.purge         # purges of 10,000 and 100,000; hits with rules
    python -m benchmarks.compression   # memory and hits with compressed bodies
    python -m benchmarks.reload_flood  # no-cache reloads against a slow database
    python -m benchmarks.http_pairs    # hits over HTTP beside their floors and ceilings

Every measure runs against one private redis-server started for the run. The
contenders serve the same ``/users/1`` JSON: a raw redis-py ``GET`` (the floor),
a bare Flask app, Flask-Caching's ``@cache.cached()`` on its RedisCache backend,
Django's per-site cache middleware on Django's RedisCache backend, and
``CacheMiddleware`` around the bare Flask app.

The soak (``benchmarks/soak.py``) checks every answer while Redis is killed,
stopped and made read-only, and reports the latency the cache adds.

Timings depend on the machine: no figure is asserted by the test suite or CI
(tests/test_soak.py runs a 10 s soak, asserting correctness only).
"""
