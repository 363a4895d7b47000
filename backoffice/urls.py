from django.contrib import admin
from django.urls import include, path, re_path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView
from django.views.i18n import set_language

from backoffice import track
from backoffice.monitoring import health, metrics
from backoffice.portal import views as portal_views
from orders.api.errors import api_not_found
from orders.webhooks import provider_webhook

# JSON for /api/ paths, the usual pages elsewhere (used when DEBUG is off).
handler404 = "orders.api.errors.not_found"
handler500 = "orders.api.errors.server_error"

urlpatterns = [
    path("", portal_views.site_root, name="site-root"),
    path("i18n/setlang/", set_language, name="set_language"),
    # Operations (docs/observability.md): no login, no session, never cached.
    path("healthz", health.healthz, name="healthz"),
    path("readyz", health.readyz, name="readyz"),
    path("metrics", metrics.metrics_view, name="metrics"),
    path("webhooks/<slug:provider>/", provider_webhook, name="provider-webhook"),
    path("track/<str:token>/", track.track_order, name="track-order"),
    path("track/<str:token>/report/", track.track_report, name="track-report"),
    path("admin/", admin.site.urls),
    path("accounts/", include("backoffice.portal.auth_urls")),
    path("merchant/", include("backoffice.portal.urls")),
    path("api/v1/", include("orders.api.urls")),
    path("api/v1/", include("support.api_urls")),
    path("api/schema/", SpectacularAPIView.as_view(), name="api-schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="api-schema"), name="api-docs"),
    re_path(r"^api/", api_not_found),
]
