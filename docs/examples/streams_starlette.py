import asyncio

from starlette.applications import Starlette
from starlette.responses import StreamingResponse
from starlette.routing import Route

from redis_wsgi_cache.asgi import CacheMiddleware


async def events(request):
    async def ticks():
        for number in range(3):
            yield f"data: tick {number}\n\n"
            await asyncio.sleep(0.01)

    return StreamingResponse(ticks(), media_type="text/event-stream")


async def tokens(request):
    async def words():
        for word in ("a ", "stream ", "of ", "tokens"):
            yield word

    # Not an event stream, but never stored: nginx's unbuffered mark.
    return StreamingResponse(words(), headers={"X-Accel-Buffering": "no"})


app = Starlette(routes=[Route("/events", events), Route("/tokens", tokens)])
# A client that leaves is heard by the app at once on a stream, and within
# finish_after_disconnect seconds on a body the cache is still storing.
app.add_middleware(CacheMiddleware, default_ttl=60, finish_after_disconnect=5)
