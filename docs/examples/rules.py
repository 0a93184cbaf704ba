from flask import Flask

from redis_wsgi_cache import CacheMiddleware

app = Flask(__name__)
app.wsgi_app = CacheMiddleware(
    app.wsgi_app, rules=[{"path": "/static/*", "ttl": 86400, "tags": ["static"]}]
)
