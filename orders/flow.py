"""The flow page's picture of a saga: the sequence diagram's geometry and the timeline's rows.

The diagram is drawn from the real events and deliveries: one lifeline per app, and an arrow
from the publishing app to each subscribing app per delivery, styled by the delivery's state.
The geometry is computed here and rendered as inline SVG by the template
(``orders/templates/orders/_flow_diagram.html``): no JavaScript, nothing fetched from elsewhere.
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
from dataclasses import dataclass

from orders.selectors import TimelineDelivery, TimelineEvent

# The saga's services, left to right as in the brief's sequence diagram, then the apps that
# listen to it. Apps not named here get a lifeline of their own after these.
SERVICES = {
    "orders": ("Orders", "Order Service"),
    "payments": ("Payments", "Payment Service"),
    "inventory": ("Inventory", "Inventory Service"),
    "shipping": ("Shipping", "Shipping Service"),
    "notifications": ("Notifications", "Notification Service"),
}

# A delivery's state as the page shows it, worst first.
STATES = ("dead", "pending", "retried", "done")

LEGEND = (
    ("done", "done"),
    ("retried", "retried, then done"),
    ("pending", "pending"),
    ("dead", "dead letter"),
)

# Geometry of the diagram, in SVG user units (pixels at 100%).
GUTTER = 112  # left margin: each event's number and time
COLUMN = 212  # distance between lifelines
RIGHT = 16
HEADER_TOP = 12
HEADER_HEIGHT = 48
FIRST_ROW = HEADER_TOP + HEADER_HEIGHT + 40  # the "place order" arrow
BAND_GAP = 6  # between two events' bands
BAND_PAD_TOP = 30  # room for the first arrow's label
ROW = 50  # between two arrows of one event
BAND_PAD_BOTTOM = 22  # room for the last arrow's badge
ACTIVATION_HALF = 5  # half the width of an activation bar; arrows end at its edge


def delivery_state(delivery: TimelineDelivery) -> str:
    """done, retried (done after more than one attempt), pending or dead."""
    if delivery.status == "dead":
        return "dead"
    if delivery.status == "done":
        return "retried" if delivery.attempts > 1 else "done"
    return "pending"


def delivery_badge(delivery: TimelineDelivery) -> str:
    state = delivery_state(delivery)
    attempts = delivery.attempts
    if state == "retried":
        return f"retried · {attempts} attempts"
    if state == "dead":
        return f"dead letter · {attempts} attempt{'s' if attempts != 1 else ''}"
    if state == "pending":
        if attempts:
            return f"pending · {attempts} failed attempt{'s' if attempts != 1 else ''}"
        return "pending"
    return ""


def app_of(name: str) -> str:
    """The app of an event type ("orders.OrderPlaced") or a subscriber ("payments.x")."""
    return name.split(".", 1)[0] if "." in name else name


def short_name(name: str) -> str:
    return name.split(".", 1)[1] if "." in name else name


def offset_format(seconds: float) -> str:
    """A time after the order was placed: +0 ms, +153 ms, +2.41 s, +3 min 12 s, +2 h 3 min."""
    seconds = max(seconds, 0.0)
    if seconds < 1:
        return f"+{seconds * 1000:.0f} ms"
    if seconds < 60:
        return f"+{seconds:.2f} s"
    if seconds < 3600:
        return f"+{int(seconds // 60)} min {int(seconds % 60)} s"
    return f"+{int(seconds // 3600)} h {int(seconds % 3600 // 60)} min"


# --- the diagram's parts ------------------------------------------------------------------------


@dataclass(frozen=True)
class Lifeline:
    app: str
    title: str
    subtitle: str
    x: int
    box_x: int
    box_width: int


@dataclass(frozen=True)
class Arrow:
    number: int  # the event's number on the page
    event_type: str
    label: str
    subscriber: str
    state: str
    attempts: int
    badge: str
    tooltip: str
    path: str  # SVG path data
    label_x: int
    label_y: int
    label_anchor: str
    badge_y: int
    x1: int
    x2: int
    y: int


@dataclass(frozen=True)
class Note:
    """An event that no app subscribes to, published on its app's lifeline."""

    number: int
    event_type: str
    label: str
    x: int
    y: int
    width: int
    height: int

    @property
    def center_x(self) -> int:
        return self.x + self.width // 2


@dataclass(frozen=True)
class Activation:
    app: str
    x: int
    y: int
    height: int


@dataclass(frozen=True)
class Band:
    number: int
    event_type: str
    state: str
    parity: str
    y: int
    height: int
    marker_y: int
    offset: str


@dataclass(frozen=True)
class Diagram:
    width: int
    height: int
    lifelines: tuple[Lifeline, ...]
    bands: tuple[Band, ...]
    arrows: tuple[Arrow, ...]
    notes: tuple[Note, ...]
    activations: tuple[Activation, ...]
    lifeline_top: int
    lifeline_bottom: int
    footer_y: int
    header_height: int
    start_x: int  # the "place order" found message
    start_y: int
    start_end_x: int


def _lifelines(events: list[TimelineEvent]) -> dict[str, Lifeline]:
    apps = list(SERVICES)
    for event in events:
        for app in [app_of(event.type), *(app_of(d.subscriber) for d in event.deliveries)]:
            if app not in apps:
                apps.append(app)
    lifelines = {}
    for i, app in enumerate(apps):
        title, subtitle = SERVICES.get(app, (app.replace("_", " ").title(), f"app “{app}”"))
        x = GUTTER + COLUMN // 2 + i * COLUMN
        box_width = COLUMN - 36
        lifelines[app] = Lifeline(app, title, subtitle, x, x - box_width // 2, box_width)
    return lifelines


def _arrow(
    *, number: int, event: TimelineEvent, delivery: TimelineDelivery, x1: int, x2: int, y: int
) -> Arrow:
    state = delivery_state(delivery)
    tooltip = f"{event.type} → {delivery.subscriber}: {delivery.status}, " + (
        f"{delivery.attempts} attempt{'s' if delivery.attempts != 1 else ''}"
    )
    if delivery.last_error:
        tooltip += f" — {delivery.last_error}"
    common = {
        "number": number,
        "event_type": event.type,
        "label": short_name(event.type),
        "subscriber": delivery.subscriber,
        "state": state,
        "attempts": delivery.attempts,
        "badge": delivery_badge(delivery),
        "tooltip": tooltip,
        "x1": x1,
        "x2": x2,
        "y": y,
    }
    if x1 == x2:
        # A subscriber in the publishing app: a loop to the right of its lifeline.
        start, loop = x1 + ACTIVATION_HALF, x1 + 44
        return Arrow(
            **common,
            path=f"M{start},{y - 8} H{loop} V{y + 8} H{start + 1}",
            label_x=loop + 8,
            label_y=y + 4,
            label_anchor="start",
            badge_y=y + 22,
        )
    direction = 1 if x2 > x1 else -1
    start = x1 + direction * ACTIVATION_HALF
    end = x2 - direction * (ACTIVATION_HALF + 1)
    return Arrow(
        **common,
        path=f"M{start},{y} H{end}",
        label_x=(x1 + x2) // 2,
        label_y=y - 9,
        label_anchor="middle",
        badge_y=y + 18,
    )


def flow_diagram(events: list[TimelineEvent], *, placed_at: dt.datetime) -> Diagram:
    """The sequence diagram of one saga: where every box, line and label goes."""
    lifelines = _lifelines(events)
    width = GUTTER + COLUMN * len(lifelines) + RIGHT
    orders_x = lifelines["orders"].x
    start_y = FIRST_ROW

    bands: list[Band] = []
    arrows: list[Arrow] = []
    notes: list[Note] = []
    # Where each (event, app) pair's handler ran: the y at which its delivery arrived.
    arrived: dict[tuple[uuid.UUID, str], int] = {}
    first_row: dict[uuid.UUID, int] = {}
    last_row: dict[uuid.UUID, int] = {}

    top = start_y + 16
    for number, event in enumerate(events, start=1):
        publisher = lifelines[app_of(event.type)]
        y = top + BAND_PAD_TOP
        deliveries = sorted(
            event.deliveries,
            key=lambda d: (list(lifelines).index(app_of(d.subscriber)), d.subscriber),
        )
        rows = []
        for delivery in deliveries:
            target = lifelines[app_of(delivery.subscriber)]
            arrows.append(
                _arrow(
                    number=number, event=event, delivery=delivery, x1=publisher.x, x2=target.x, y=y
                )
            )
            arrived.setdefault((event.id, target.app), y)
            rows.append(y)
            y += ROW
        if not deliveries:
            label = short_name(event.type)
            note_width = max(120, 7 * len(label) + 28)
            notes.append(
                Note(
                    number=number,
                    event_type=event.type,
                    label=label,
                    x=publisher.x - note_width // 2,
                    y=y - 14,
                    width=note_width,
                    height=36,
                )
            )
            rows.append(y)
            y += ROW
        bottom = rows[-1] + BAND_PAD_BOTTOM
        first_row[event.id], last_row[event.id] = rows[0], rows[-1]
        states = [delivery_state(d) for d in event.deliveries]
        bands.append(
            Band(
                number=number,
                event_type=event.type,
                state=next((s for s in STATES if s in states), "none"),
                parity="odd" if number % 2 else "even",
                y=top,
                height=bottom - top,
                marker_y=rows[0] - 4,
                offset=offset_format((event.occurred_at - placed_at).total_seconds()),
            )
        )
        top = bottom + BAND_GAP

    # Activation bars: from the arrival of the delivery that caused an event (on the lifeline of
    # the app that handled it) down to that event's last arrow.
    activations = []
    for event in events:
        app = app_of(event.type)
        if event.causation_id is None:
            begin = start_y if app == "orders" else first_row[event.id] - 12
        else:
            begin = arrived.get((event.causation_id, app), first_row[event.id] - 12)
        end = last_row[event.id] + 12
        activations.append(
            Activation(app, lifelines[app].x - ACTIVATION_HALF, begin, max(end - begin, 12))
        )

    lifeline_bottom = top + 8
    return Diagram(
        width=width,
        height=lifeline_bottom + HEADER_HEIGHT + 12,
        lifelines=tuple(lifelines.values()),
        bands=tuple(bands),
        arrows=tuple(arrows),
        notes=tuple(notes),
        activations=tuple(activations),
        lifeline_top=HEADER_TOP + HEADER_HEIGHT,
        lifeline_bottom=lifeline_bottom,
        footer_y=lifeline_bottom,
        header_height=HEADER_HEIGHT,
        start_x=GUTTER + 8,
        start_y=start_y,
        start_end_x=orders_x - ACTIVATION_HALF - 1,
    )


# --- the timeline ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class TimelineDeliveryRow:
    subscriber: str
    app: str
    handler: str
    status: str
    state: str
    attempts: int
    badge: str
    last_error: str | None


@dataclass(frozen=True)
class TimelineRow:
    number: int
    event: TimelineEvent
    app: str
    service: str
    name: str
    time: str
    offset: str
    state: str
    cause_number: int | None
    cause_name: str | None
    payload_json: str
    deliveries: tuple[TimelineDeliveryRow, ...]

    @property
    def short_cause_id(self) -> str:
        return str(self.event.causation_id)[:8] if self.event.causation_id else ""


def timeline_rows(events: list[TimelineEvent], *, placed_at: dt.datetime) -> list[TimelineRow]:
    numbers = {event.id: number for number, event in enumerate(events, start=1)}
    names = {event.id: short_name(event.type) for event in events}
    rows = []
    for number, event in enumerate(events, start=1):
        deliveries = tuple(
            TimelineDeliveryRow(
                subscriber=d.subscriber,
                app=app_of(d.subscriber),
                handler=short_name(d.subscriber),
                status=d.status,
                state=delivery_state(d),
                attempts=d.attempts,
                badge=delivery_badge(d),
                last_error=d.last_error,
            )
            for d in event.deliveries
        )
        states = [d.state for d in deliveries]
        app = app_of(event.type)
        rows.append(
            TimelineRow(
                number=number,
                event=event,
                app=app,
                service=SERVICES.get(app, (app.title(),))[0],
                name=short_name(event.type),
                time=event.occurred_at.astimezone(dt.UTC).strftime("%H:%M:%S.%f")[:-3],
                offset=offset_format((event.occurred_at - placed_at).total_seconds()),
                state=next((s for s in STATES if s in states), "none"),
                cause_number=numbers.get(event.causation_id),
                cause_name=names.get(event.causation_id),
                payload_json=json.dumps(event.payload, indent=2, sort_keys=True, default=str),
                deliveries=deliveries,
            )
        )
    return rows
