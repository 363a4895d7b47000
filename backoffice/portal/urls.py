"""/merchant/...: URL kwargs are named `merchant_code`, `order_id`, `ticket_id` and
`membership_id` (tests/test_scoping.py fills them by these names)."""

from django.urls import path

from backoffice.portal import member_views, order_views, ticket_views, views

app_name = "portal"

urlpatterns = [
    path("", views.choose_merchant, name="choose"),
    path("<slug:merchant_code>/", views.home, name="home"),
    path("<slug:merchant_code>/orders/", order_views.order_list, name="orders"),
    path("<slug:merchant_code>/orders/export.csv", order_views.order_export, name="orders_export"),
    path("<slug:merchant_code>/orders/<int:order_id>/", order_views.order_detail, name="order"),
    path("<slug:merchant_code>/orders/<int:order_id>/check-now/", order_views.order_check_now, name="order_check_now"),
    path("<slug:merchant_code>/tickets/", ticket_views.ticket_list, name="tickets"),
    path("<slug:merchant_code>/tickets/new/", ticket_views.ticket_new, name="ticket_new"),
    path("<slug:merchant_code>/tickets/<int:ticket_id>/", ticket_views.ticket_detail, name="ticket"),
    path("<slug:merchant_code>/tickets/<int:ticket_id>/reply/", ticket_views.ticket_reply, name="ticket_reply"),
    path("<slug:merchant_code>/members/", member_views.member_list, name="members"),
    path("<slug:merchant_code>/members/<int:membership_id>/", member_views.member_role, name="member_role"),
    path("<slug:merchant_code>/members/<int:membership_id>/remove/", member_views.member_remove,
         name="member_remove"),
]
