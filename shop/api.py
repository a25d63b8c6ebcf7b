"""API-wide error handling: client mistakes become 4xx with a clear body, never a 500."""

import traceback

from django.core.exceptions import ValidationError as DjangoValidationError
from rest_framework import exceptions, parsers
from rest_framework.request import Request
from rest_framework.views import exception_handler as drf_exception_handler

NESTED_TOO_DEEPLY = "JSON parse error - the document is nested too deeply"


def exception_handler(exc, context):
    if isinstance(exc, DjangoValidationError):
        detail = exc.message_dict if hasattr(exc, "error_dict") else {"detail": exc.messages}
        exc = exceptions.ValidationError(detail=detail)
    elif isinstance(exc, RecursionError) and _raised_parsing_the_body(exc):
        # Views with parsers of their own (DRF's obtain_auth_token) do not use JSONParser below.
        exc = exceptions.ParseError(NESTED_TOO_DEEPLY)
    return drf_exception_handler(exc, context)


def _raised_parsing_the_body(exc: BaseException) -> bool:
    return any(
        frame.f_code is Request._parse.__code__ for frame, _ in traceback.walk_tb(exc.__traceback__)
    )


class JSONParser(parsers.JSONParser):
    """DRF's JSON parser, answering a pathologically nested document with a 400 too: the stock
    parser catches ValueError only, and json raises RecursionError for those (a 500)."""

    def parse(self, stream, media_type=None, parser_context=None):
        try:
            return super().parse(stream, media_type, parser_context)
        except RecursionError:
            raise exceptions.ParseError(
                "JSON parse error - the document is nested too deeply"
            ) from None
