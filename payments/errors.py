"""Errors the payments services raise at a call site."""


class PaymentError(Exception):
    pass


class PaymentNotRefundable(PaymentError):
    """The order has no payment, or its payment was never captured, so there is nothing to
    give back."""


class PaymentOutcomeUnknown(PaymentError):
    """A charge or refund may or may not have been made: the gateway has forgotten its key.
    Nothing calls the gateway for it again until an operator resolves the attempt."""


class PaymentAttemptNotResolvable(PaymentError):
    """An operator tried to resolve an attempt that is not unresolved."""
