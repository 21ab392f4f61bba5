"""Top-level URL routes: the admin desk, the API (/api/v1/) with its schema and docs, health and metrics."""

from django.contrib import admin
from django.urls import include, path

from api.metrics import metrics_view
from api.system import RootHealthView, RootLiveView, RootReadyView

urlpatterns = [
    path("admin/", admin.site.urls),
    path("api/v1/", include("api.urls")),
    # Where load balancers and orchestrators look; documented under /api/v1/health/.
    path("health/", RootHealthView.as_view()),
    path("health/live/", RootLiveView.as_view()),
    path("health/ready/", RootReadyView.as_view()),
    path("metrics", metrics_view, name="metrics"),
]

handler404 = "api.errors.not_found"
handler500 = "api.errors.server_error"
