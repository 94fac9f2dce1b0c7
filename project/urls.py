from django.contrib import admin
from django.urls import include, path
from django.views.generic import RedirectView

urlpatterns = [
    path("", RedirectView.as_view(url="/v1/docs/", permanent=False)),
    path("admin/", admin.site.urls),
    path("demo/", include("project.demo.urls")),
    path("", include("billing_app.urls")),
]
