from django.urls import path

from . import views

urlpatterns = [
    path("seo/", views.seo),
    path("aeo/", views.aeo),
    path("email.send/", views.email_send),
]
