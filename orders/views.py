"""HTML pages of the orders app: a customer's orders, and each order's saga flow (its diagram
and timeline are laid out by ``orders/flow.py``)."""

from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.http import Http404
from django.shortcuts import render

from orders.flow import LEGEND, STATES, flow_diagram, timeline_rows
from orders.models import Order
from orders.selectors import order_get_for_user, order_list_for_user, order_timeline


@login_required
def order_list(request):
    """The user's orders (with orders.view_any_order: everyone's), each linking to its flow."""
    orders = order_list_for_user(user=request.user).select_related("customer")[:100]
    return render(request, "orders/order_list.html", {"orders": orders})


@login_required
def order_flow(request, reference: str):
    """One order's saga: its summary, a sequence diagram and the timeline of its events."""
    try:
        order = order_get_for_user(user=request.user, reference=reference)
    except Order.DoesNotExist:
        raise Http404("No such order.") from None
    # Subscribers, attempts, errors, payloads and ids are for operators; a customer (or support)
    # sees the events, their times and the order's state.
    machinery = request.user.has_perm("orders.view_order_machinery")
    events = order_timeline(order=order)
    rows = timeline_rows(events, placed_at=order.created_at)
    counts = {state: 0 for state in STATES}
    for row in rows:
        for delivery in row.deliveries:
            counts[delivery.state] += 1
    return render(
        request,
        "orders/order_flow.html",
        {
            "order": order,
            "machinery": machinery,
            # "out_of_stock" -> "Out of stock" (the choices' labels are title-cased).
            "reason": (order.cancellation_reason or "").replace("_", " ").capitalize(),
            "lines": list(order.lines.all()),
            "rows": rows,
            "diagram": flow_diagram(events, placed_at=order.created_at)
            if events and machinery
            else None,
            "counts": counts,
            "legend": LEGEND,
            "deliveries_total": sum(counts.values()),
            "settled": order.status in (Order.Status.COMPLETED, Order.Status.CANCELLED)
            and not counts["pending"],
        },
    )
