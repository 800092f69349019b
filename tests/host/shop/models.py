"""The host's user model: another name than Notifier's, a UUID primary key, signs in by email,
and none of the fields Notifier's own user model had (phone, time zone, ...)."""

from __future__ import annotations

import uuid
from typing import Any

from django.contrib.auth.models import AbstractBaseUser, BaseUserManager, PermissionsMixin
from django.db import models


class CustomerManager(BaseUserManager["Customer"]):
    def create_user(self, email: str, password: str | None = None, **fields: Any) -> Customer:
        customer = self.model(email=self.normalize_email(email), **fields)
        customer.set_password(password)
        customer.save(using=self._db)
        return customer

    def create_superuser(self, email: str, password: str | None = None, **fields: Any) -> Customer:
        return self.create_user(email, password, is_staff=True, is_superuser=True, **fields)


class Customer(AbstractBaseUser, PermissionsMixin):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    email = models.EmailField(unique=True)
    display_name = models.CharField(max_length=100, blank=True)
    is_staff = models.BooleanField(default=False)
    is_active = models.BooleanField(default=True)

    objects = CustomerManager()

    USERNAME_FIELD = "email"
    EMAIL_FIELD = "email"

    def __str__(self) -> str:
        return self.display_name or self.email
