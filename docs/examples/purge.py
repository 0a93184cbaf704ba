from redis_wsgi_cache import Cache

cache = Cache()  # the settings the app's middleware reads
cache.purge("https://example.com/users/7")  # every variant; any spelling of the URL
cache.purge_tag("user-7")  # every response tagged user-7
cache.purge_prefix("https://example.com/users/")  # every URL under the prefix
cache.purge_all()  # everything this cache stored (this prefix only)
cache.purge_tag("user-7", soft=True)  # mark stale instead of deleting
