from django.urls import path
from rest_framework.routers import SimpleRouter

from orders.api.views import OrderViewSet, UnreturnedSummaryView

app_name = "orders_api"

router = SimpleRouter()
router.register("orders", OrderViewSet, basename="order")

urlpatterns = [
    *router.urls,
    path("unreturned/summary/", UnreturnedSummaryView.as_view(), name="unreturned-summary"),
]
