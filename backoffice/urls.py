from django.contrib import admin
from django.urls import path
from django.views.generic import RedirectView
from django.views.i18n import set_language

from backoffice import track
from orders.webhooks import provider_webhook

urlpatterns = [
    path("", RedirectView.as_view(pattern_name="admin:index", permanent=False)),
    path("i18n/setlang/", set_language, name="set_language"),
    path("webhooks/<slug:provider>/", provider_webhook, name="provider-webhook"),
    path("track/<str:token>/", track.track_order, name="track-order"),
    path("track/<str:token>/report/", track.track_report, name="track-report"),
    path("admin/", admin.site.urls),
]
