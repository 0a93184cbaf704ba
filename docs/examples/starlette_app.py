from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route

from redis_wsgi_cache.asgi import CacheMiddleware


async def user(request):
    return JSONResponse({"id": request.path_params["user_id"]})


app = Starlette(routes=[Route("/users/{user_id:int}", user)])
app.add_middleware(CacheMiddleware, default_ttl=60)  # Starlette and FastAPI alike
