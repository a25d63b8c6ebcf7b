"""manage.py payments_attempt_resolve ORDER_ID (--charge | --refund) [--reference ID] --note TEXT

An operator's answer for a gateway attempt left ``unresolved`` (the gateway forgot its key, so
whether money moved could not be asked): after checking the gateway's own records, give the
charge or refund id it made, or none when it made none. Then replay the dead-lettered delivery
(admin, or ``manage.py outbox_replay --dead``) and the saga goes on from that answer.
"""

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from payments.errors import PaymentAttemptNotResolvable
from payments.services import payment_attempt_resolve


class Command(BaseCommand):
    help = "Resolve an unresolved charge or refund attempt from the gateway's own records."

    def add_arguments(self, parser):
        parser.add_argument("order_id", type=int)
        kind = parser.add_mutually_exclusive_group(required=True)
        kind.add_argument("--charge", dest="kind", action="store_const", const="charge")
        kind.add_argument("--refund", dest="kind", action="store_const", const="refund")
        parser.add_argument(
            "--reference",
            default="",
            help="the charge or refund id the gateway made; leave out when it made none",
        )
        parser.add_argument("--note", required=True, help="how the outcome was established")

    def handle(self, *args, order_id, kind, reference, note, **options):
        try:
            attempt = payment_attempt_resolve(
                order_id=order_id, kind=kind, reference=reference, note=note
            )
        except (PaymentAttemptNotResolvable, ValidationError) as exc:
            raise CommandError(str(exc)) from None
        self.stdout.write(
            f"{attempt}: now replay the order's dead-lettered {kind} delivery "
            "(manage.py outbox_replay --dead --subscriber ...)"
        )
