from flask import Flask, request

from redis_wsgi_cache import add_tags
from redis_wsgi_cache.integrations.flask import RedisWSGICache

# Stand-ins for the app's own storage.
USERS = {7: {"id": 7, "name": "Grace"}}
AVATARS: dict[int, bytes] = {}

app = Flask(__name__)
app.config["REDIS_WSGI_CACHE_DEFAULT_TTL"] = 60
# REDIS_WSGI_CACHE_REDIS_URL comes from app.config too, or the environment.
cache = RedisWSGICache(app)  # or cache = RedisWSGICache(), then cache.init_app(app)


@app.get("/users/<int:user_id>")
def user(user_id: int):
    add_tags(request.environ, f"user-{user_id}")
    return USERS[user_id]


@app.post("/users/<int:user_id>/avatar")
def change_avatar(user_id: int):
    AVATARS[user_id] = request.get_data()
    cache.purge_tag(f"user-{user_id}")  # every page tagged with this user
    return "", 204
