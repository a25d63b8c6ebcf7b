"""API-wide parsing: client mistakes become 4xx with a clear body, never a 500.

Errors themselves are shaped in shop/problems.py.
"""

from rest_framework import exceptions, parsers

from shop.problems import NESTED_TOO_DEEPLY


class JSONParser(parsers.JSONParser):
    """DRF's JSON parser, answering a pathologically nested document with a 400 too: the stock
    parser catches ValueError only, and json raises RecursionError for those (a 500)."""

    def parse(self, stream, media_type=None, parser_context=None):
        try:
            return super().parse(stream, media_type, parser_context)
        except RecursionError:
            raise exceptions.ParseError(NESTED_TOO_DEEPLY) from None
