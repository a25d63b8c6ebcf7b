"""Errors the payments services raise at a call site."""


class PaymentError(Exception):
    pass


class PaymentNotRefundable(PaymentError):
    """The order has no payment, or its payment was never captured, so there is nothing to
    give back."""
