"""/api/v1/: thin views. Every object lookup goes through `orders_visible_to(request.user)`
(another merchant's id answers 404), every write through one service in `orders.services`."""

from __future__ import annotations

from decimal import Decimal

from django.db.models import Prefetch, QuerySet
from django.urls import reverse
from django.utils import timezone
from drf_spectacular.utils import OpenApiResponse, extend_schema, extend_schema_view
from rest_framework import mixins, status, viewsets
from rest_framework.decorators import action
from rest_framework.permissions import IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from orders import services
from orders.api import serializers as s
from orders.api.idempotency import IdempotentMixin
from orders.api.merchants import merchant_for_write
from orders.api.pagination import OrderCursorPagination
from orders.api.permissions import MerchantWritePermission, actor_for, staff_permission
from orders.api.schema import E400, E404, E409, READ_ERRORS, WRITE_ERRORS
from orders.diagnosis import OrderEvidence, diagnose
from orders.evidence import diagnose_now, diagnosis_facts
from orders.filters import OrderFilter
from orders.models import Order, PaymentAttempt
from orders.recheck import check_order_now
from orders.selectors import is_back_office, orders_visible_to
from orders.snapshots import AGE_BUCKETS, unreturned_counts
from orders.timeline import order_timeline

# --- diagnosis -----------------------------------------------------------------------------------


def order_diagnosis(order: Order) -> dict | None:
    """The diagnosis panel's facts for one order, computed now from its evidence
    (`diagnose_now`, as the staff order page does)."""
    _evidence, verdict = diagnose_now(order.pk)
    return diagnosis_facts(verdict, order.attempts.all())


# --- orders --------------------------------------------------------------------------------------


@extend_schema_view(
    list=extend_schema(
        summary="List orders", description="Newest first, with cursor pagination (`?cursor=`, `?page_size=`, max 200).",
        responses={200: s.OrderSerializer(many=True), **E400, **READ_ERRORS},
    ),
    retrieve=extend_schema(
        summary="Get one order with its attempts and diagnosis",
        responses={200: s.OrderDetailSerializer, **READ_ERRORS, **E404},
    ),
)
class OrderViewSet(IdempotentMixin, mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    permission_classes = [IsAuthenticated, MerchantWritePermission]
    filterset_class = OrderFilter
    pagination_class = OrderCursorPagination
    serializer_class = s.OrderSerializer
    lookup_url_kwarg = "order_id"
    lookup_value_regex = r"[0-9]+"

    def get_queryset(self) -> QuerySet[Order]:
        queryset = orders_visible_to(self.request.user).select_related("merchant")
        if self.action != "list":
            queryset = queryset.prefetch_related(
                Prefetch("attempts", queryset=PaymentAttempt.objects.order_by("-created_at", "-id"))
            )
        return queryset

    def filter_queryset(self, queryset: QuerySet) -> QuerySet:
        # Query filters belong to the list; an id is looked up among everything the user sees.
        return super().filter_queryset(queryset) if self.action == "list" else queryset

    def get_serializer_class(self):
        return s.OrderDetailSerializer if self.action == "retrieve" else s.OrderSerializer

    def _serialize(self, order: Order) -> dict:
        """An order read through `get_queryset` (attempts prefetched), with its diagnosis."""
        return s.OrderDetailSerializer(
            order, context={**self.get_serializer_context(), "diagnosis": {order.pk: order_diagnosis(order)}}
        ).data

    def _detail(self, order: Order) -> dict:
        """The order as it is now, after a write changed it."""
        return self._serialize(self.get_queryset().get(pk=order.pk))

    def _created_detail(self, order: Order) -> dict:
        """`_detail` of an order this request has just created, without reading it back.

        A new order has no payment attempts, and it is not unreturned until it has waited its
        merchant's threshold (`stuck_after`, positive by constraint): `diagnose` on what we hold
        finds nothing, which is what `diagnose_now` would find after its five queries and the
        outage aggregate. Anything else (an order created with an earlier submission time) takes
        the full path.
        """
        evidence = OrderEvidence(
            order_id=order.pk, stuck_after=order.merchant.stuck_after, status=order.status,
            status_changed_at=order.status_changed_at, submitted_at=order.submitted_at, amount=order.amount,
            currency=order.currency, reference=order.reference, needs_review=order.needs_review,
        )
        if diagnose(evidence, now=timezone.now()) is not None:
            return self._detail(order)
        # As read back: money with the column's decimal places ("128" is stored as 128.00).
        for name in ("amount", "captured_amount"):
            places = Order._meta.get_field(name).decimal_places
            setattr(order, name, getattr(order, name).quantize(Decimal(1).scaleb(-places)))
        # OrderDetailSerializer's shape: the order's fields, then no attempts and no diagnosis
        # (serializing an empty queryset of attempts cost more than the rest of the order).
        fields = s.OrderSerializer(order, context=self.get_serializer_context()).data
        return {**fields, "attempts": [], "diagnosis": None}

    def retrieve(self, request: Request, *args, **kwargs) -> Response:
        return Response(self._serialize(self.get_object()))

    # --- create ---

    @extend_schema(
        summary="Create an order",
        request=s.OrderCreateSerializer,
        responses={
            201: s.OrderDetailSerializer,
            **WRITE_ERRORS,
            409: OpenApiResponse(s.DuplicateErrorSerializer, description="The merchant already has this reference."),
        },
    )
    def create(self, request: Request, *args, **kwargs) -> Response:
        serializer = s.OrderCreateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        merchant = merchant_for_write(request, data.get("merchant"))
        order = services.create_order(
            merchant=merchant, reference=data["reference"], amount=data["amount"], currency=data["currency"],
            customer_name=data["customer_name"], customer_email=data["customer_email"],
            customer_phone=data["customer_phone"], shipping_address=data["shipping_address"],
            actor=actor_for(request.user),
        )
        location = reverse("orders_api:order-detail", args=[order.pk])
        return Response(self._created_detail(order), status=status.HTTP_201_CREATED, headers={"Location": location})

    # --- payment attempts ---

    @extend_schema(
        methods=["GET"], summary="List the order's payment attempts", request=None,
        responses={200: s.PaymentAttemptSerializer(many=True), **READ_ERRORS, **E404},
    )
    @extend_schema(
        methods=["POST"], summary="Start a payment attempt (the order becomes payment pending)",
        request=s.PaymentAttemptCreateSerializer,
        responses={201: s.PaymentAttemptSerializer, **WRITE_ERRORS, **E404, **E409},
    )
    @action(detail=True, methods=["get", "post"], url_path="payment-attempts", pagination_class=None,
            filter_backends=[])  # the list's query filters do not apply (nor belong in the schema)
    def payment_attempts(self, request: Request, order_id=None) -> Response:
        order = self.get_object()
        if request.method == "GET":
            return Response(s.PaymentAttemptSerializer(order.attempts.all(), many=True).data)
        serializer = s.PaymentAttemptCreateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        attempt = services.create_payment_attempt(
            order=order.pk, actor=actor_for(request.user), **serializer.validated_data
        )
        return Response(s.PaymentAttemptSerializer(attempt).data, status=status.HTTP_201_CREATED)

    # --- timeline ---

    @extend_schema(
        summary="The order's timeline, newest first (staff also see internal entries)",
        request=None, responses={200: s.TimelineEntrySerializer(many=True), **READ_ERRORS, **E404},
    )
    @action(detail=True, methods=["get"], pagination_class=None, filter_backends=[])
    def timeline(self, request: Request, order_id=None) -> Response:
        order = self.get_object()
        entries = order_timeline(order, include_internal=is_back_office(request.user))
        return Response(s.TimelineEntrySerializer(entries, many=True).data)

    # --- actions ---

    @extend_schema(
        summary="Check the order's open payments with the provider now",
        request=None, responses={200: s.CheckNowResultSerializer, **WRITE_ERRORS, **E404},
    )
    @action(
        detail=True, methods=["post"], url_path="check-now",
        permission_classes=[IsAuthenticated, MerchantWritePermission, staff_permission("check_now")],
    )
    def check_now(self, request: Request, order_id=None) -> Response:
        order = self.get_object()
        report = check_order_now(order.pk, actor=actor_for(request.user))
        items = [
            {"attempt_id": item.attempt_id, "provider": item.provider, "reference": item.reference,
             "reported_status": item.reported_status, "changed": item.changed, "error": item.error}
            for item in report.items
        ]
        counts = {"checked": report.checked, "changed": report.changed, "errors": report.errors}
        return Response({**counts, "items": s.CheckItemSerializer(items, many=True).data, "order": self._detail(order)})

    @extend_schema(
        summary="Cancel an unpaid order (open payment attempts are cancelled with it)",
        request=s.ReasonSerializer, responses={200: s.OrderDetailSerializer, **WRITE_ERRORS, **E404, **E409},
    )
    @action(
        detail=True, methods=["post"],
        permission_classes=[IsAuthenticated, MerchantWritePermission, staff_permission("cancel_order")],
    )
    def cancel(self, request: Request, order_id=None) -> Response:
        order = self.get_object()
        serializer = s.ReasonSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        # The one cancel path; the actor says whether staff or the merchant cancelled.
        services.staff_cancel_order(order=order.pk, reason=serializer.validated_data["reason"],
                                    actor=actor_for(request.user))
        return Response(self._detail(order))

    @extend_schema(
        summary="Mark the order paid by hand (staff with the mark-paid permission)",
        description="200 when applied. Above the merchant's limit a second staff member must approve: "
                    "202 with the pending approval, and the order is unchanged until then.",
        request=s.MarkPaidSerializer,
        responses={
            200: s.MarkPaidResultSerializer,
            202: OpenApiResponse(s.MarkPaidResultSerializer, description="Waiting for a second staff member."),
            **WRITE_ERRORS, **E404, **E409,
        },
    )
    @action(
        detail=True, methods=["post"], url_path="mark-paid",
        permission_classes=[IsAuthenticated, staff_permission("mark_paid", staff_only=True)],
    )
    def mark_paid(self, request: Request, order_id=None) -> Response:
        order = self.get_object()
        serializer = s.MarkPaidSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        result = services.request_mark_paid(
            order=order.pk, provider_reference=data["provider_reference"], reason=data["reason"],
            provider=data["provider"], actor=actor_for(request.user),
        )
        approval = s.ApprovalSerializer(result.approval).data if result.approval is not None else None
        body = {"applied": result.applied, "approval": approval, "order": self._detail(order)}
        return Response(body, status=status.HTTP_200_OK if result.applied else status.HTTP_202_ACCEPTED)


class UnreturnedSummaryView(APIView):
    permission_classes = [IsAuthenticated]

    @extend_schema(
        summary="Unreturned orders counted by cause, category, provider and age bucket",
        description="Among the orders you can see. Age buckets: " + ", ".join(AGE_BUCKETS) + ".",
        responses={200: s.CountsSerializer, **READ_ERRORS},
    )
    def get(self, request: Request) -> Response:
        counts = unreturned_counts(orders=orders_visible_to(request.user))
        return Response(s.CountsSerializer(counts).data)
