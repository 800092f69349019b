"""Campaign models. For now only the campaign a message can point back to."""

from __future__ import annotations

from django.db import models


class Campaign(models.Model):
    name = models.CharField(max_length=200)
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return self.name
