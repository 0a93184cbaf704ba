import os

from django.core.wsgi import get_wsgi_application

from redis_wsgi_cache.integrations.django import cache_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "mysite.settings")
application = cache_application(get_wsgi_application())
