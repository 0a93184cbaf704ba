from fastapi import FastAPI, Response

from redis_wsgi_cache.asgi import CacheMiddleware

api = FastAPI()


@api.get("/users/{user_id}")
async def user(user_id: int, response: Response) -> dict[str, int]:
    response.headers["Cache-Control"] = "max-age=60"
    response.headers["Surrogate-Key"] = f"user-{user_id}"  # a tag; not sent to clients
    return {"id": user_id}  # the slow part: made once a minute, at most


@api.post("/users/{user_id}/avatar", status_code=204)
async def set_avatar(user_id: int) -> None:
    await app.purge_tag(f"user-{user_id}")  # every cached page of the user, everywhere


# Settings by keyword, REDIS_WSGI_CACHE_* variable or setup.cfg's [redis_wsgi_cache],
# as for the WSGI middleware. Redis is connected on first use; the cache closes
# itself when the server shuts the app down.
# Serve with: uvicorn fastapi_app:app --no-date-header (a hit keeps its own Date)
app = CacheMiddleware(api)
