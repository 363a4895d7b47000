"""/api/v1/tickets/: thin views. Every ticket lookup goes through `tickets_visible_to(request.user)`
(another merchant's id answers 404), every conversation through `ticket_messages_visible_to`
(merchant users never read internal notes), every write through `support.services`."""

from __future__ import annotations

from django.db.models import Count, OuterRef, QuerySet, Subquery
from django.db.models.functions import Coalesce
from django.urls import reverse
from django.utils.translation import gettext as _
from drf_spectacular.utils import OpenApiResponse, extend_schema, extend_schema_view
from rest_framework import exceptions, mixins, status, viewsets
from rest_framework.decorators import action
from rest_framework.permissions import IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response

from orders.api.idempotency import IdempotentMixin
from orders.api.merchants import merchant_for_write
from orders.api.pagination import OrderCursorPagination
from orders.api.permissions import MerchantWritePermission, actor_for, staff_permission
from orders.api.schema import E400, READ_ERRORS, WRITE_ERRORS, error_response
from orders.models import Merchant, Order
from orders.selectors import can_write_for, is_back_office, orders_visible_to
from support import services
from support.api import serializers as s
from support.filters import TicketFilter
from support.models import MessageVisibility, Ticket
from support.selectors import ticket_messages_visible_to, tickets_visible_to

E404 = {404: error_response("No such ticket among those you can see.")}
E409_OPEN = {409: OpenApiResponse(
    s.TicketConflictErrorSerializer,
    description="The order already has an open ticket: `existing_id` is its id. Write there instead.",
)}


class TicketCursorPagination(OrderCursorPagination):
    """Newest first; stable while new tickets arrive, and no page costs a COUNT."""

    ordering = ("-created_at", "-id")


def default_visibility(user) -> str:
    return MessageVisibility.INTERNAL if is_back_office(user) else MessageVisibility.MERCHANT


@extend_schema_view(
    list=extend_schema(
        summary="List tickets",
        description="Newest first, with cursor pagination (`?cursor=`, `?page_size=`, max 200). "
                    "`message_count` counts the messages you can read.",
        responses={200: s.TicketSerializer(many=True), **E400, **READ_ERRORS},
    ),
    retrieve=extend_schema(
        summary="Get one ticket with its conversation",
        description="`messages` holds the messages you can read, oldest first (merchant users never see "
                    "internal notes).",
        responses={200: s.TicketDetailSerializer, **READ_ERRORS, **E404},
    ),
)
class TicketViewSet(IdempotentMixin, mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    """Support tickets of the merchants you can see, and their conversation."""

    # Merchant users write as operator or manager of the ticket's merchant; staff open tickets
    # with `support.add_ticket` and reply with `support.reply_ticket`, as in the ticket admin.
    permission_classes = [
        IsAuthenticated, MerchantWritePermission, staff_permission("support.add_ticket", writes_only=True),
    ]
    filterset_class = TicketFilter
    pagination_class = TicketCursorPagination
    serializer_class = s.TicketSerializer
    lookup_url_kwarg = "ticket_id"
    lookup_value_regex = r"[0-9]+"

    def get_queryset(self) -> QuerySet[Ticket]:
        user = self.request.user
        # The selector's own visibility rule, correlated to each row: one subquery, no query per ticket.
        readable = ticket_messages_visible_to(user, OuterRef("pk")).order_by().values("ticket")
        count = readable.annotate(n=Count("pk")).values("n")
        return (
            tickets_visible_to(user).select_related("merchant", "order")
            .annotate(message_count=Coalesce(Subquery(count), 0))
        )

    def filter_queryset(self, queryset: QuerySet) -> QuerySet:
        # Query filters belong to the list; an id is looked up among everything the user sees.
        return super().filter_queryset(queryset) if self.action == "list" else queryset

    def get_serializer_class(self):
        return s.TicketDetailSerializer if self.action == "retrieve" else s.TicketSerializer

    def _detail(self, ticket: Ticket) -> dict:
        """`ticket` as read through `get_queryset` (joined and counted), with its conversation."""
        messages = ticket_messages_visible_to(self.request.user, ticket)
        return s.TicketDetailSerializer(ticket, context={**self.get_serializer_context(), "messages": messages}).data

    def retrieve(self, request: Request, *args, **kwargs) -> Response:
        return Response(self._detail(self.get_object()))

    # --- create ---

    def _target(self, order_id: int | None, code: str | None) -> tuple[Merchant, Order | None]:
        """The ticket's order (among those the user sees) and merchant, or 400 / 403."""
        user = self.request.user
        if order_id is None:
            return merchant_for_write(self.request, code), None
        order = orders_visible_to(user).select_related("merchant").filter(pk=order_id).first()
        if order is None:
            # Another merchant's order reads as no order at all.
            raise exceptions.ValidationError({"order": [_("No such order among yours.")]})
        if code and code != order.merchant.code:
            raise exceptions.ValidationError({"merchant": [_("The order belongs to another merchant.")]})
        if not can_write_for(user, order.merchant_id):
            raise exceptions.PermissionDenied(_("Your role for this merchant allows reading only."))
        return order.merchant, order

    @extend_schema(
        summary="Open a ticket",
        description="For an order (`order`) or for a merchant alone (`merchant`). At most one open ticket "
                    "per order. The ticket starts `new`; `message` becomes its first message.",
        request=s.TicketCreateSerializer,
        responses={201: s.TicketDetailSerializer, **WRITE_ERRORS, **E409_OPEN},
    )
    def create(self, request: Request, *args, **kwargs) -> Response:
        user = request.user
        serializer = s.TicketCreateSerializer(data=request.data, context={"back_office": is_back_office(user)})
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        merchant, order = self._target(data.get("order"), data.get("merchant"))
        # An order with an open ticket raises TicketAlreadyOpen: 409 with `existing_id`.
        ticket = services.open_ticket(
            subject=data["subject"], source=Ticket.Source.API, actor=actor_for(user), merchant=merchant,
            order=order, category=data["category"], priority=data["priority"], body=data["message"],
            visibility=data.get("visibility") or default_visibility(user),
        )
        location = reverse("support_api:ticket-detail", args=[ticket.pk])
        return Response(self._detail(self.get_queryset().get(pk=ticket.pk)), status=status.HTTP_201_CREATED,
                        headers={"Location": location})

    # --- messages ---

    @extend_schema(
        methods=["GET"], summary="The ticket's messages you can read, oldest first", request=None,
        description="Merchant users read public replies and merchant notes; our staff read internal notes too.",
        responses={200: s.TicketMessageSerializer(many=True), **READ_ERRORS, **E404},
    )
    @extend_schema(
        methods=["POST"], summary="Add a message to the ticket",
        description="A public reply is emailed to the customer of a ticket with an order; a merchant note is "
                    "not. Merchant users cannot write internal notes (400 on `visibility`).",
        request=s.TicketMessageCreateSerializer,
        responses={201: s.TicketMessageSerializer, **WRITE_ERRORS, **E404},
    )
    @action(
        detail=True, methods=["get", "post"], pagination_class=None, filter_backends=[],
        permission_classes=[
            IsAuthenticated, MerchantWritePermission, staff_permission("support.reply_ticket", writes_only=True),
        ],
    )
    def messages(self, request: Request, ticket_id=None) -> Response:
        ticket = self.get_object()
        user = request.user
        if request.method == "GET":
            return Response(s.TicketMessageSerializer(ticket_messages_visible_to(user, ticket), many=True).data)
        serializer = s.TicketMessageCreateSerializer(data=request.data, context={"back_office": is_back_office(user)})
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        message = services.add_message(
            ticket=ticket.pk, body=data["body"], visibility=data.get("visibility") or default_visibility(user),
            actor=actor_for(user),
        )
        return Response(s.TicketMessageSerializer(message).data, status=status.HTTP_201_CREATED)
