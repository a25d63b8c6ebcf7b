"""Products and reservations in the Django admin.

Creating or changing a product goes through the services, like the API does: the catalogue
event is published and the stock rules hold. Reservations are a record of the saga: read-only.
"""

from django import forms
from django.contrib import admin

from inventory.models import STOCK_MAX, Product, StockLevel, StockReservation, StockReservationLine
from inventory.services import product_create, product_update


class ProductAdminForm(forms.ModelForm):
    # The rendered value travels back hidden, so a save that leaves this field alone does not
    # overwrite stock that moved (orders fulfilled) while the page was open.
    stock = forms.IntegerField(
        label="Stock on hand",
        min_value=0,
        max_value=STOCK_MAX,
        show_hidden_initial=True,
        help_text="Units on the shelf, reserved ones included. Not below what is reserved.",
    )

    class Meta:
        model = Product
        fields = ["sku", "name", "price"]

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.stock_level = None
        if self.instance.pk is not None:
            self.stock_level = StockLevel.objects.filter(product=self.instance).first()
            self.fields["stock"].initial = self.stock_level.on_hand if self.stock_level else 0

    def clean(self):
        cleaned = super().clean()
        stock = cleaned.get("stock")
        if self.stock_level is not None and stock is not None and "stock" in self.changed_data:
            # The admin saves in one transaction: these locks hold until product_update runs.
            # The product first, then its stock level: the order product_update takes them in,
            # so an edit from the API at the same moment queues instead of deadlocking.
            Product.objects.select_for_update().get(pk=self.instance.pk)
            level = StockLevel.objects.select_for_update().get(pk=self.stock_level.pk)
            if stock < level.reserved:
                self.add_error(
                    "stock",
                    f"Ensure this value is at least {level.reserved}: "
                    f"{level.reserved} units are reserved for paid orders.",
                )
        return cleaned


@admin.register(Product)
class ProductAdmin(admin.ModelAdmin):
    form = ProductAdminForm
    list_display = ["sku", "name", "price", "currency", "on_hand", "reserved", "available"]
    list_select_related = ["stock"]
    search_fields = ["sku", "name"]
    ordering = ["sku"]

    def get_readonly_fields(self, request, obj=None):
        fields = ["currency", "reserved", "available", "created_at", "updated_at"]
        return ["sku", *fields] if obj is not None else fields

    def get_fields(self, request, obj=None):
        if obj is None:
            return ["sku", "name", "price", "stock"]
        return [
            *("sku", "name", "price", "currency", "stock", "reserved", "available"),
            *("created_at", "updated_at"),
        ]

    def has_delete_permission(self, request, obj=None):
        # No event tells other apps that a product is gone, and reservations name its sku.
        return False

    def save_model(self, request, obj, form, change):
        data = form.cleaned_data
        if not change:
            product = product_create(
                sku=data["sku"], name=data["name"], price=data["price"], stock=data["stock"]
            )
        else:
            product = product_update(
                sku=obj.sku,
                name=data["name"],
                price=data["price"],
                stock=data["stock"] if "stock" in form.changed_data else None,
            )
        # The admin goes on with ``obj`` (history entry, redirect): make it the saved row.
        obj.pk = product.pk
        obj._state.adding = False
        obj.refresh_from_db()

    @admin.display(ordering="stock__on_hand")
    def on_hand(self, obj):
        return _stock(obj).on_hand if _stock(obj) else 0

    @admin.display(ordering="stock__reserved")
    def reserved(self, obj):
        return _stock(obj).reserved if _stock(obj) else 0

    @admin.display(description="available")
    def available(self, obj):
        return _stock(obj).available if _stock(obj) else 0


def _stock(product: Product) -> StockLevel | None:
    try:
        return product.stock
    except StockLevel.DoesNotExist:
        return None


class StockReservationLineInline(admin.TabularInline):
    model = StockReservationLine
    fields = ["sku", "quantity"]
    readonly_fields = fields
    extra = 0
    can_delete = False

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False


@admin.register(StockReservation)
class StockReservationAdmin(admin.ModelAdmin):
    list_display = ["order_id", "status", "created_at", "updated_at"]
    list_filter = ["status"]
    search_fields = ["=order_id"]
    fields = ["order_id", "status", "created_at", "updated_at"]
    readonly_fields = fields
    inlines = [StockReservationLineInline]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False
