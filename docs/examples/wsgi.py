from example_app import create_app, wrap

app = wrap(create_app())  # settings: REDIS_WSGI_CACHE_* > ./setup.cfg > defaults
