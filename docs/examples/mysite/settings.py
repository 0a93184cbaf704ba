import os

SECRET_KEY = "only-for-the-example"
DEBUG = False
ALLOWED_HOSTS = ["*"]
ROOT_URLCONF = "mysite.urls"
INSTALLED_APPS = ["django.contrib.auth", "django.contrib.contenttypes", "mysite"]
DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}}

# --8<-- [start:cache]
REDIS_WSGI_CACHE = {
    "redis_url": os.environ.get("REDIS_URL", "redis://localhost:6379/0"),
    "default_ttl": 60,
}
# --8<-- [end:cache]
