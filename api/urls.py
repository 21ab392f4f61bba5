"""The API's routes under /api/v1/: plans, approvals, policy, grants, agents, health, tokens, webhook secret, schema."""

from django.urls import URLPattern, URLResolver, include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView
from rest_framework.routers import DefaultRouter

from api.approvals.views import ApprovalViewSet, GrantView, PolicyView
from api.plans.views import PlanViewSet
from api.system import AgentsView, HealthView, LiveView, ReadyView, TokenView, WebhookSecretView

router = DefaultRouter()
router.register("plans", PlanViewSet, basename="plan")
router.register("approvals", ApprovalViewSet, basename="approval")

urlpatterns: list[URLPattern | URLResolver] = [
    path("auth/token/", TokenView.as_view(), name="api-token"),
    path("agents/", AgentsView.as_view(), name="agents"),
    path("policy/", PolicyView.as_view(), name="policy"),
    path("grants/<str:pk>/", GrantView.as_view(), name="grant"),
    path("health/", HealthView.as_view(), name="health"),
    path("webhook-secret/", WebhookSecretView.as_view(), name="webhook-secret"),
    path("health/live/", LiveView.as_view(), name="health-live"),
    path("health/ready/", ReadyView.as_view(), name="health-ready"),
    path("schema/", SpectacularAPIView.as_view(), name="schema"),
    path("docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="docs"),
    path("", include(router.urls)),
]
