"""The order worklist: the staff changelist of orders (work in progress)."""

from __future__ import annotations

from django.contrib import admin


class WorklistMixin:
    list_display = ["reference", "status", "submitted_at", "stuck_since", "stuck_cause", "needs_review"]
    list_select_related = ["merchant"]
    show_full_result_count = False
    show_facets = admin.ShowFacets.NEVER
    list_per_page = 50
