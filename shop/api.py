"""API-wide parsing: client mistakes become 4xx with a clear body, never a 500.

Errors themselves are shaped in shop/problems.py.
"""

from django.conf import settings
from rest_framework import exceptions, parsers, permissions

from shop.problems import NESTED_TOO_DEEPLY


class JSONParser(parsers.JSONParser):
    """DRF's JSON parser, answering a pathologically nested document with a 400 too: the stock
    parser catches ValueError only, and json raises RecursionError for those (a 500)."""

    def parse(self, stream, media_type=None, parser_context=None):
        try:
            return super().parse(stream, media_type, parser_context)
        except RecursionError:
            raise exceptions.ParseError(NESTED_TOO_DEEPLY) from None


def api_docs_visible(request) -> bool:
    """Whether this caller may see the schema and Swagger UI: anyone when
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
