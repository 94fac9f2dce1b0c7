from django.apps import AppConfig


class OrgsConfig(AppConfig):
    name = "tests.orgs"
    label = "orgs"
    default_auto_field = "django.db.models.BigAutoField"
