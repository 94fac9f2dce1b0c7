from django.contrib import admin
from django.urls import include, path

from . import views

urlpatterns = [
    path("admin/", admin.site.urls),
    path("demo/", include("project.demo.urls")),
    path("test/seo-db-error/", views.seo_with_db_error),
    path("test/seo-pages/", views.seo_pages),
    path("test/seo-answer/", views.seo_answer),
    path("test/reports/", views.ReportView.as_view()),
    path("test/pages/", views.PagesView.as_view()),
    path("test/report-set/", views.ReportViewSet.as_view({"get": "list", "post": "create"})),
    path("test/sso/", views.sso_settings),
    path("test/metered-export/", views.metered_export),
    path("test/export/", views.ExportView.as_view()),
    path("test/either/", views.EitherFeatureView.as_view()),
    path("test/session-export/", views.SessionOnlyExportView.as_view()),
    path("test/api/plain/", views.api_plain),
    path("test/api/excluded/", views.api_plain),
    path("test/api/seo/", views.api_seo),
    path("test/api/pages/", views.api_pages),
    path("test/api/health/", views.api_health),
    path("test/api/reports/", views.ApiReportView.as_view()),
    path("test/api/calls/", views.ApiCallsView.as_view()),
    path("test/api/status/", views.ApiStatusView.as_view()),
    path("", include("billing_app.urls")),
]
