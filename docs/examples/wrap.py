import redis
from flask import Flask

from redis_wsgi_cache import CacheMiddleware

app = Flask(__name__)

# Settings from REDIS_WSGI_CACHE_* variables, then setup.cfg's [redis_wsgi_cache]:
from_the_environment = CacheMiddleware(app.wsgi_app)
# Settings given here win over both:
from_keywords = CacheMiddleware(app.wsgi_app, redis_url="redis://localhost:6379/0", default_ttl=60)
# A client of your own (it must not decode responses):
with_a_client = CacheMiddleware(app.wsgi_app, client=redis.Redis(host="localhost"))
