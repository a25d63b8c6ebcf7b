"""Demo data: a small catalogue with stock, a demo customer and an operator. Idempotent."""

from decimal import Decimal

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError
from knox.models import AuthToken

from inventory.models import Product
from inventory.services import product_create

CATALOGUE = [
    # sku, name, price, stock: LIMITED-PRINT runs out quickly, to show the refund path.
    ("MUG-CLASSIC", "Classic mug", "9.50", 500),
    ("TEE-LOGO", "Logo T-shirt", "20.00", 300),
    ("NOTEBOOK-A5", "A5 notebook", "6.25", 400),
    ("STICKER-PACK", "Sticker pack", "3.00", 1000),
    ("LIMITED-PRINT", "Limited edition print", "45.00", 5),
]
CUSTOMER = ("demo", "demo-pass-123")
OPERATOR = ("admin", "admin-pass-123")


class Command(BaseCommand):
    help = "Create the demo catalogue, a demo customer and an operator (staff). Idempotent."

    def add_arguments(self, parser):
        parser.add_argument(
            "--force",
            action="store_true",
            help="run even with DJANGO_DEBUG off (the accounts have well-known passwords)",
        )

    def handle(self, *args, **options):
        if not settings.DEBUG and not options["force"]:
            raise CommandError(
                "seed_demo creates accounts with well-known passwords; with DJANGO_DEBUG off, "
                "pass --force if you really want them"
            )
        created = 0
        for sku, name, price, stock in CATALOGUE:
            if not Product.objects.filter(sku=sku).exists():
                product_create(sku=sku, name=name, price=Decimal(price), stock=stock)
                created += 1
        User = get_user_model()
        customer = self._user(*CUSTOMER, staff=False)
        operator = self._user(*OPERATOR, staff=True)
        if not operator.is_superuser:
            operator.is_superuser = True
            operator.save(update_fields=["is_superuser"])
        _instance, token = AuthToken.objects.create(user=customer)
        self.stdout.write(
            f"catalogue: {created} products created, {len(CATALOGUE) - created} already there\n"
            f"customer:  {CUSTOMER[0]} / {CUSTOMER[1]}   (API token {token}, expires)\n"
            f"operator:  {OPERATOR[0]} / {OPERATOR[1]}   (admin at /admin/)\n"
            f"users:     {User.objects.count()}"
        )

    def _user(self, username: str, password: str, *, staff: bool):
        User = get_user_model()
        user = User.objects.filter(username=username).first()
        if user is None:
            # An address on the reserved example.com domain: notifications writes to it (the
            # worker writes the messages to var/mail/ with the default EMAIL_URL, file://).
            user = User.objects.create_user(
                username, email=f"{username}@example.com", password=password, is_staff=staff
            )
        return user
