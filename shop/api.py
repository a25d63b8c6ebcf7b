"""API-wide error handling: client mistakes become 4xx with a clear body, never a 500."""

import traceback

from django.conf import settings
from django.core.exceptions import ValidationError as DjangoValidationError
from rest_framework import exceptions, negotiation, parsers, permissions, renderers
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


def api_docs_visible(request) -> bool:
    """Whether this caller may see the schema, Swagger UI and the browsable API: anyone when
    settings.API_DOCS_PUBLIC is on, logged-in users otherwise (production's default)."""
    if settings.API_DOCS_PUBLIC:
        return True
    try:
        return bool(request.user and request.user.is_authenticated)
    except exceptions.APIException:  # bad credentials: answered by the view, as anonymous here
        return False


class ApiDocsVisible(permissions.BasePermission):
    """The schema's and Swagger UI's permission (SPECTACULAR_SETTINGS["SERVE_PERMISSIONS"])."""

    def has_permission(self, request, view) -> bool:
        return api_docs_visible(request)


class ContentNegotiation(negotiation.DefaultContentNegotiation):
    """DRF's negotiation, without the browsable API for callers who may not see the docs: they
    get JSON (the browsable API is the schema in another form)."""

    def select_renderer(self, request, renderers_, format_suffix=None):
        if not api_docs_visible(request):
            renderers_ = [
                r for r in renderers_ if not isinstance(r, renderers.BrowsableAPIRenderer)
            ] or renderers_
        return super().select_renderer(request, renderers_, format_suffix)
