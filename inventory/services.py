"""Writes of the inventory app. Each runs in one transaction and publishes what it did in it.

Stock rules: ``0 <= reserved <= on_hand`` on every StockLevel (checked by the database too);
an order's reservation takes every line or none; at rest ``on_hand`` is the initial stock
minus what fulfilled orders took. Concurrent reservations lock the StockLevel rows they touch,
always in sku order, so two orders for the same products queue instead of deadlocking.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Iterable, Mapping
from decimal import Decimal
from typing import Any, Protocol

from django.core.exceptions import ValidationError
from django.db import IntegrityError, connection, connections, transaction
from django.db.models import F

from inventory.events import (
    ProductCatalogued,
    ReservedLine,
    ShortLine,
    StockNotAvailable,
    StockReleased,
    StockUpdated,
)
from inventory.models import (
    STOCK_MAX,
    Product,
    StockLevel,
    StockReservation,
    StockReservationLine,
)
from outbox import atomic, insert_or_nothing, publish, row_get, row_update

logger = logging.getLogger(__name__)

_CENT = Decimal("0.01")
_SKU_MAX_LENGTH = Product._meta.get_field("sku").max_length
_QUANTITY_MAX = 2**63 - 1  # StockReservationLine.quantity is a 64-bit column


class StockLine(Protocol):
    """A line to reserve (payments.events.PaidLine has it; a {"sku", "quantity"} dict too)."""

    sku: str
    quantity: int


# --- products ---------------------------------------------------------------------------------


def product_create(*, sku: str, name: str, price: Decimal, stock: int) -> Product:
    """Catalogue a new product with ``stock`` units on hand; publish ProductCatalogued."""
    with transaction.atomic():
        product = Product(sku=sku, name=_name_clean(name), price=price)
        errors = _model_errors(product)
        errors.update(_stock_errors(stock))
        if errors:
            raise ValidationError(errors)
        product.price = product.price.quantize(_CENT)
        try:
            # A concurrent create of the same sku may have committed since full_clean looked.
            with transaction.atomic():
                product.save()
        except IntegrityError:
            taken = ValidationError(f"A product with sku {sku!r} already exists.", code="unique")
            raise ValidationError({"sku": [taken]}) from None
        StockLevel.objects.create(product=product, on_hand=stock)
        _catalogued_publish(product)
        return product


def product_update(
    *,
    sku: str,
    name: str | None = None,
    price: Decimal | None = None,
    stock: int | None = None,
) -> Product:
    """Change a product's name, price and/or stock on hand.

    ``stock`` sets the units on hand; it may not go below what is reserved right now.
    Publishes ProductCatalogued when the name or the price changed. Raises
    ``Product.DoesNotExist`` for an unknown sku.
    """
    with transaction.atomic():
        product = Product.objects.select_for_update().get(sku=sku)
        before = (product.name, product.price)
        if name is not None:
            product.name = _name_clean(name)
        if price is not None:
            product.price = price
        errors = _model_errors(product)
        level = None
        if stock is not None:
            stock_errors = _stock_errors(stock)
            if not stock_errors:
                level = StockLevel.objects.select_for_update().get(product=product)
                if stock < level.reserved:
                    stock_errors = {
                        "stock": [
                            f"Ensure this value is at least {level.reserved}: "
                            f"{level.reserved} units are reserved for paid orders."
                        ]
                    }
            errors.update(stock_errors)
        if errors:
            raise ValidationError(errors)

        product.price = product.price.quantize(_CENT)
        if (product.name, product.price) != before:
            product.save(update_fields=["name", "price", "updated_at"])
            _catalogued_publish(product)
        if level is not None and level.on_hand != stock:
            level.on_hand = stock
            level.save(update_fields=["on_hand"])
        return product


def _name_clean(name: Any) -> Any:
    return name.strip() if isinstance(name, str) else name


def _model_errors(product: Product) -> dict[str, list]:
    """The model's own rules (sku pattern and uniqueness, lengths, price digits and sign)."""
    errors: dict[str, list] = {}
    try:
        product.full_clean()
    except ValidationError as exc:
        errors = {field: list(found) for field, found in exc.error_dict.items()}  # with codes
    if isinstance(product.name, str) and "\x00" in product.name:
        errors.setdefault("name", []).append("Null characters are not allowed.")
    return errors


def _stock_errors(stock: Any) -> dict[str, list[str]]:
    if not isinstance(stock, int) or isinstance(stock, bool):
        return {"stock": [f"A whole number of units is required, got {stock!r}."]}
    if not 0 <= stock <= STOCK_MAX:
        return {"stock": [f"Ensure this value is between 0 and {STOCK_MAX}."]}
    return {}


def _catalogued_publish(product: Product) -> None:
    publish(
        ProductCatalogued(
            sku=product.sku,
            name=product.name,
            price=str(product.price),
            currency=product.currency,
        )
    )


# --- stock ------------------------------------------------------------------------------------


def stock_reserve(*, order_id: int, lines: Iterable[StockLine]) -> StockReservation:
    """Reserve every line of the order, or none; publish StockUpdated or StockNotAvailable.

    Idempotent per order: when the order already has a reservation (in any status) it is
    returned and nothing changes; that includes the ``cancelled`` row stock_release leaves for
    an order cancelled before its payment arrived, so a late PaymentCompleted reserves nothing.
    An unknown sku has 0 units available.
    """
    with atomic():
        requested = _lines_validate(order_id=order_id, lines=lines)
        # Sku order for every locker: two orders for the same products queue, never deadlock.
        # The reservation is looked for only when its insert finds one (below), under these
        # locks: a duplicate (rare) waits for them instead of costing every first delivery a
        # read of its own.
        levels = _levels_lock(list(requested))
        available = {sku: levels[sku][1] if sku in levels else 0 for sku in requested}
        short = [
            ShortLine(sku=sku, requested=quantity, available=available[sku])
            for sku, quantity in requested.items()
            if quantity > available[sku]
        ]
        status = StockReservation.Status.REJECTED if short else StockReservation.Status.RESERVED
        reservation = StockReservation(order_id=order_id, status=status)
        if not insert_or_nothing(reservation):
            # Already reserved (a duplicate delivery; or cancelled first), or a concurrent
            # duplicate (under the same locks, or with no known sku in common) committed first.
            existing = StockReservation.objects.filter(order_id=order_id).first()
            if existing is None:
                raise IntegrityError(f"order {order_id}'s reservation conflicts with no row")
            return existing
        _lines_insert(reservation.pk, requested)

        if short:
            publish(
                StockNotAvailable(
                    reservation_id=reservation.pk, order_id=order_id, short=tuple(short)
                )
            )
            return reservation

        _levels_add({levels[sku][0]: quantity for sku, quantity in requested.items()}, reserved=+1)
        publish(
            StockUpdated(
                reservation_id=reservation.pk,
                order_id=order_id,
                lines=tuple(
                    ReservedLine(sku=sku, quantity=quantity) for sku, quantity in requested.items()
                ),
            )
        )
        return reservation


def stock_fulfil(*, order_id: int) -> StockReservation | None:
    """The order's reserved goods leave the warehouse: on hand and reserved both drop.

    Idempotent: only a ``reserved`` reservation changes (to ``fulfilled``); a fulfilled or
    rejected one is returned as it is, and an order without a reservation gives None.
    """
    with atomic():
        reservation = row_get(StockReservation, lock=True, order_id=order_id)
        if reservation is None:
            logger.warning("order %s has no stock reservation to fulfil", order_id)
            return None
        if reservation.status != StockReservation.Status.RESERVED:
            return reservation

        _levels_add(_reserved_levels_lock(reservation.pk), on_hand=-1, reserved=-1)
        reservation.status = StockReservation.Status.FULFILLED
        row_update(reservation, ["status", "updated_at"])
        return reservation


def _levels_lock(skus: list[str]) -> dict[str, tuple[int, int]]:
    """The stock rows of these skus, locked in sku order, as sku: (stock row pk, available), in
    one statement written once per number of skus (the ORM's form of it, a join to the
    products, cost more CPU to build than the rest of the reservation's reads)."""
    with connection.cursor() as cursor:
        cursor.execute(_levels_lock_sql(connection.alias, len(skus)), skus)
        return {sku: (pk, on_hand - reserved) for pk, sku, on_hand, reserved in cursor.fetchall()}


@functools.lru_cache(maxsize=64)
def _levels_lock_sql(alias: str, count: int) -> str:
    db = connections[alias]
    quote = db.ops.quote_name
    level = StockLevel._meta
    lock = ""
    if db.features.has_select_for_update:
        of = ("l",) if db.features.has_select_for_update_of else ()
        lock = " " + db.ops.for_update_sql(of=of)
    product = level.get_field("product")
    return (
        f"SELECT l.{quote(level.pk.column)}, p.{quote(Product._meta.get_field('sku').column)}, "
        f"l.{quote(level.get_field('on_hand').column)}, "
        f"l.{quote(level.get_field('reserved').column)} "
        f"FROM {quote(level.db_table)} l INNER JOIN {quote(Product._meta.db_table)} p "
        f"ON p.{quote(product.target_field.column)} = l.{quote(product.column)} "
        f"WHERE p.{quote(Product._meta.get_field('sku').column)} IN "
        f"({', '.join(['%s'] * count)}) ORDER BY p.{quote(Product._meta.get_field('sku').column)}"
        f"{lock}"
    )


def _lines_insert(reservation_id: int, requested: Mapping[str, int]) -> None:
    """The reservation's lines, one ``INSERT`` written once per number of lines."""
    params = [value for sku, number in requested.items() for value in (reservation_id, sku, number)]
    with connection.cursor() as cursor:
        cursor.execute(_lines_insert_sql(connection.alias, len(requested)), params)


@functools.lru_cache(maxsize=64)
def _lines_insert_sql(alias: str, count: int) -> str:
    quote = connections[alias].ops.quote_name
    meta = StockReservationLine._meta
    columns = ", ".join(
        quote(meta.get_field(name).column) for name in ("reservation", "sku", "quantity")
    )
    return (
        f"INSERT INTO {quote(meta.db_table)} ({columns}) "
        f"VALUES {', '.join(['(%s, %s, %s)'] * count)}"
    )


def _reserved_levels_lock(reservation_id: int) -> dict[int, int]:
    """The reservation's stock rows, locked in sku order, with each one's reserved quantity
    (stock row pk: quantity), in one statement. Written once as SQL for the reason
    ``_levels_add`` is: the ORM's form of it (a ``Subquery`` per row) cost more CPU to build
    than the rest of the fulfilment."""
    quote = connection.ops.quote_name
    lock = (
        " " + connection.ops.for_update_sql(of=("l",))
        if connection.features.has_select_for_update
        else ""
    )
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT l.id, r.quantity FROM {quote(StockLevel._meta.db_table)} l "
            f"INNER JOIN {quote(Product._meta.db_table)} p ON p.id = l.product_id "
            f"INNER JOIN {quote(StockReservationLine._meta.db_table)} r ON r.sku = p.sku "
            f"WHERE r.reservation_id = %s ORDER BY p.sku{lock}",
            [reservation_id],
        )
        return dict(cursor.fetchall())


def _levels_add(quantities: Mapping[int, int], **signs: int) -> None:
    """Add (sign +1) or take (-1) each stock row's quantity (by pk) to or from the fields named,
    in one UPDATE for all rows. The caller holds the rows' locks, taken in sku order.

    Written once as SQL (``UPDATE ... FROM (VALUES ...)``, PostgreSQL and SQLite alike): the
    ORM's ``Case``/``When`` for the same statement cost more CPU to build than anything else in
    the reservation and the fulfilment (issue 12). The table's checks still hold every row."""
    if not quantities:
        return
    quote = connection.ops.quote_name
    table = quote(StockLevel._meta.db_table)
    sets = ", ".join(
        f"{quote(column)} = {table}.{quote(column)} {'+' if sign > 0 else '-'} v.column2"
        for column, sign in ((StockLevel._meta.get_field(f).column, s) for f, s in signs.items())
    )
    rows = ", ".join(["(%s, %s)"] * len(quantities))
    params = [value for pk, quantity in quantities.items() for value in (pk, quantity)]
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {table} SET {sets} FROM (VALUES {rows}) AS v "
            f"WHERE {table}.{quote(StockLevel._meta.pk.column)} = v.column1",
            params,
        )


def stock_release(*, order_id: int) -> StockReservation:
    """Compensate a cancelled order: its stock becomes available again; publish StockReleased.

    A ``reserved`` reservation gives its units back to ``available``; a ``fulfilled`` one (the
    shipment was scheduled, then cancelled before it left) puts its goods back on hand. An
    order without a reservation gets a ``cancelled`` one, so that a PaymentCompleted arriving
    later reserves nothing. Idempotent: any other status is returned as it is.
    """
    with atomic():
        if not isinstance(order_id, int) or isinstance(order_id, bool) or order_id < 1:
            raise ValidationError({"order_id": [f"must be a positive integer, got {order_id!r}"]})
        reservation = StockReservation.objects.select_for_update().filter(order_id=order_id).first()
        if reservation is None:
            try:
                # Unique on order_id: a concurrent stock_reserve and this insert queue; whichever
                # commits second finds the other's row.
                with transaction.atomic():
                    return StockReservation.objects.create(
                        order_id=order_id, status=StockReservation.Status.CANCELLED
                    )
            except IntegrityError:
                reservation = StockReservation.objects.select_for_update().get(order_id=order_id)
        before = reservation.status
        if before not in (StockReservation.Status.RESERVED, StockReservation.Status.FULFILLED):
            return reservation

        quantities = dict(reservation.lines.values_list("sku", "quantity"))
        levels = (
            StockLevel.objects.select_for_update(of=("self",))
            .filter(product__sku__in=quantities)
            .order_by("product__sku")
            .values_list("pk", "product__sku")
        )
        for pk, sku in list(levels):
            quantity = quantities[sku]
            if before == StockReservation.Status.RESERVED:
                StockLevel.objects.filter(pk=pk).update(reserved=F("reserved") - quantity)
            else:
                StockLevel.objects.filter(pk=pk).update(on_hand=F("on_hand") + quantity)
        reservation.status = StockReservation.Status.RELEASED
        reservation.save(update_fields=["status", "updated_at"])
        publish(
            StockReleased(
                reservation_id=reservation.pk,
                order_id=order_id,
                lines=tuple(
                    ReservedLine(sku=sku, quantity=q) for sku, q in sorted(quantities.items())
                ),
                restocked=before == StockReservation.Status.FULFILLED,
            )
        )
        return reservation


def _lines_validate(*, order_id: int, lines: Iterable[StockLine]) -> dict[str, int]:
    """The requested quantity per sku, in sku order (a sku on two lines counts once, summed)."""
    errors: dict[str, list[str]] = {}
    if not isinstance(order_id, int) or isinstance(order_id, bool) or order_id < 1:
        errors.setdefault("order_id", []).append(f"must be a positive integer, got {order_id!r}")
    requested: dict[str, int] = {}
    lines = list(lines)
    if not lines:
        errors.setdefault("lines", []).append("an order has at least one line")
    for i, line in enumerate(lines):
        if isinstance(line, Mapping):
            sku, quantity = line.get("sku"), line.get("quantity")
        else:
            sku, quantity = getattr(line, "sku", None), getattr(line, "quantity", None)
        if not isinstance(sku, str) or not 1 <= len(sku) <= _SKU_MAX_LENGTH:
            errors.setdefault("lines", []).append(
                f"line {i}: sku must be a string of 1 to {_SKU_MAX_LENGTH} characters, got {sku!r}"
            )
        elif (
            not isinstance(quantity, int)
            or isinstance(quantity, bool)
            or not 1 <= quantity <= _QUANTITY_MAX
        ):
            errors.setdefault("lines", []).append(
                f"line {i}: quantity must be a positive integer, got {quantity!r}"
            )
        else:
            requested[sku] = requested.get(sku, 0) + quantity
    if errors:
        raise ValidationError(errors)
    return dict(sorted(requested.items()))
