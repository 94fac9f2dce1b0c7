"""The benchmark views (benchmarks/views.py says what each is), beside the project's URLs;
the metered demo view /demo/seo/ comes with project.urls."""

from django.urls import path

from project.urls import urlpatterns as project_urlpatterns

from . import views

urlpatterns = [
    path("bench/plain/", views.Plain.as_view()),
    path("bench/unmetered/", views.unmetered),
    path("bench/mixin/", views.Mixin.as_view()),
    path("bench/floor/", views.floor),
    path("bench/sfu/", views.sfu),
    path("bench/ratelimit/", views.ratelimited),
    *project_urlpatterns,
]
