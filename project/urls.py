from django.contrib import admin
from django.contrib.staticfiles.urls import staticfiles_urlpatterns
from django.urls import include, path
from django.views.generic import TemplateView

urlpatterns = [
    path("", TemplateView.as_view(template_name="demo/home.html"), name="home"),
    path("admin/", admin.site.urls),
    path("accounts/", include("django.contrib.auth.urls")),
    path("demo/", include("project.demo.urls")),
    path("", include("billing_app.urls")),
    # With DEBUG on, the admin's styles under any server (gunicorn too), not only runserver.
    *staticfiles_urlpatterns(),
]
