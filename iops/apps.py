from django.apps import AppConfig


class IopsConfig(AppConfig):
    """The composition root: operations figures, retention, and the launchers `serve` and `bootstrap`."""

    name = "iops"
    verbose_name = "IOps"
