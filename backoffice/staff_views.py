"""Staff tools that are not a model page."""

from __future__ import annotations

from django import forms
from django.contrib import admin
from django.contrib.auth.decorators import permission_required
from django.db.models import Q
from django.template.response import TemplateResponse
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy

from backoffice.access import explain_access, find_user
from orders.models import Order
from orders.selectors import orders_visible_to


class AccessQuestionForm(forms.Form):
    order = forms.CharField(
        label=gettext_lazy("Order"), max_length=100,
        help_text=gettext_lazy("The order's id, or its reference (add the merchant code as code/reference if "
                               "several merchants use it)."),
    )
    user = forms.CharField(label=gettext_lazy("User"), max_length=254,
                           help_text=gettext_lazy("Username or email address of the person who cannot see it."))

    def __init__(self, *args, viewer, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.viewer = viewer  # the staff member asking: lookups go through their scope

    def clean_order(self) -> Order:
        value = self.cleaned_data["order"].strip()
        orders = orders_visible_to(self.viewer).select_related("merchant")
        if value.isdigit() and (found := orders.filter(pk=int(value)).first()):
            return found
        # A reference may itself contain "/" (INV/2026/0042) but a merchant code, a slug, never
        # does: try the whole text as a reference, and "code/reference" split at the first "/".
        query = Q(reference=value)
        code, sep, reference = value.partition("/")
        if sep:
            query |= Q(merchant__code=code, reference=reference)
        matches = list(orders.filter(query)[:2])
        if not matches:
            raise forms.ValidationError(_("No order has this id or reference."))
        if len(matches) > 1:
            raise forms.ValidationError(_("Several merchants use this reference; write it as merchant-code/reference."))
        return matches[0]

    def clean_user(self):
        user = find_user(self.cleaned_data["user"])
        if user is None:
            raise forms.ValidationError(_("No single user has this username or email address."))
        return user


@permission_required("orders.view_order", raise_exception=True)
def access_explainer(request):
    form = AccessQuestionForm(request.GET or None, viewer=request.user)
    verdict = None
    if form.is_bound and form.is_valid():
        verdict = explain_access(user=form.cleaned_data["user"], order=form.cleaned_data["order"])
    context = {
        **admin.site.each_context(request),
        "title": _("Access explainer"),
        "form": form,
        "verdict": verdict,
        "order": form.cleaned_data.get("order") if verdict else None,
        "subject": form.cleaned_data.get("user") if verdict else None,
    }
    return TemplateResponse(request, "admin/access_explainer.html", context)
