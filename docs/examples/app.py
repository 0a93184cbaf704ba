from flask import Flask, jsonify

from redis_wsgi_cache import CacheMiddleware

app = Flask(__name__)


@app.get("/users/<int:user_id>")
def user(user_id: int):
    return jsonify(id=user_id)  # the slow part: made once a minute, at most


# Settings by keyword, REDIS_WSGI_CACHE_* variable or setup.cfg's [redis_wsgi_cache].
app.wsgi_app = CacheMiddleware(app.wsgi_app, default_ttl=60)
