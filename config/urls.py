"""Top-level URL routes: the admin, the API (/api/v1/) with its schema and docs, and health."""

from django.contrib import admin
from django.urls import URLPattern, URLResolver, include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView
from rest_framework.routers import DefaultRouter

from approvals.api.views import ApprovalViewSet
from execution.api.views import AgentsView, HealthView, RootHealthView, TokenView
from plans.api.views import PlanViewSet

router = DefaultRouter()
router.register("plans", PlanViewSet, basename="plan")
router.register("approvals", ApprovalViewSet, basename="approval")

api: list[URLPattern | URLResolver] = [
    path("auth/token/", TokenView.as_view(), name="api-token"),
    path("agents/", AgentsView.as_view(), name="agents"),
    path("health/", HealthView.as_view(), name="health"),
    path("schema/", SpectacularAPIView.as_view(), name="schema"),
    path("docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="docs"),
    path("", include(router.urls)),
]

urlpatterns = [
    path("admin/", admin.site.urls),
    path("api/v1/", include(api)),
    path("health/", RootHealthView.as_view()),
]

handler404 = "config.api.not_found"
handler500 = "config.api.server_error"
