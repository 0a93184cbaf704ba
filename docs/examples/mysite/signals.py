from django.contrib.auth.models import User
from django.db.models.signals import post_save
from django.dispatch import receiver

from redis_wsgi_cache.integrations.django import get_cache


@receiver(post_save, sender=User)
def purge_user_pages(sender, instance, **kwargs):
    get_cache().purge_tag(f"user-{instance.pk}")
