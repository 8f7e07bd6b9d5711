"""Django app config for the per-owner limits."""

from django.apps import AppConfig


class LimitsConfig(AppConfig):
    name = "limits"
    verbose_name = "Per-owner limits"
