from flask import Flask

from redis_wsgi_cache import CacheMiddleware

app = Flask(__name__)
app.wsgi_app = CacheMiddleware(app.wsgi_app)


@app.get("/healthz")
def healthz():
    health = app.wsgi_app.health()
    # {"ok": true, "redis": "reachable", "latency_ms": 0.21, "breaker": "closed",
    #  "entries": 1, "memory_bytes": 958712}
    return health, 200 if health["ok"] else 503
