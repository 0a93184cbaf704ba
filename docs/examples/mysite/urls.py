from django.http import JsonResponse
from django.urls import path

from redis_wsgi_cache import add_tags


def user(request, user_id: int):
    add_tags(request.META, f"user-{user_id}")
    return JsonResponse({"id": user_id})


urlpatterns = [path("users/<int:user_id>", user)]
