from rest_framework.routers import SimpleRouter

from support.api.views import TicketViewSet

app_name = "support_api"

router = SimpleRouter()
router.register("tickets", TicketViewSet, basename="ticket")

urlpatterns = [*router.urls]
