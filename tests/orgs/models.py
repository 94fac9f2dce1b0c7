"""A host project that bills organisations, with a custom user model: both keyed by UUID,
as many projects are (tests/settings_org.py)."""

import uuid

from django.contrib.auth.models import AbstractUser
from django.db import models


class User(AbstractUser):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)


class Organization(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    name = models.CharField(max_length=200)
    email = models.EmailField()
    members = models.ManyToManyField(User, related_name="organizations", blank=True)

    def __str__(self) -> str:
        return self.name
