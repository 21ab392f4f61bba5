"""Top-level URL routes: the admin desk, the API (/api/v1/) with its schema and docs, and health."""

from django.contrib import admin
from django.urls import include, path

from api.system import RootHealthView

urlpatterns = [
    path("admin/", admin.site.urls),
    path("api/v1/", include("api.urls")),
    path("health/", RootHealthView.as_view()),
]

handler404 = "api.errors.not_found"
handler500 = "api.errors.server_error"
