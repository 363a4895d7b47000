from django.contrib import admin
from django.urls import include, path, re_path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView
from django.views.generic import RedirectView
from django.views.i18n import set_language

from backoffice import track
from orders.api.errors import api_not_found
from orders.webhooks import provider_webhook

# JSON for /api/ paths, the usual pages elsewhere (used when DEBUG is off).
handler404 = "orders.api.errors.not_found"
handler500 = "orders.api.errors.server_error"

urlpatterns = [
    path("", RedirectView.as_view(pattern_name="admin:index", permanent=False)),
    path("i18n/setlang/", set_language, name="set_language"),
    path("webhooks/<slug:provider>/", provider_webhook, name="provider-webhook"),
    path("track/<str:token>/", track.track_order, name="track-order"),
    path("track/<str:token>/report/", track.track_report, name="track-report"),
    path("admin/", admin.site.urls),
    path("api/v1/", include("orders.api.urls")),
    path("api/schema/", SpectacularAPIView.as_view(), name="api-schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="api-schema"), name="api-docs"),
    re_path(r"^api/", api_not_found),
]
