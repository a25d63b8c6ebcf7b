"""GET /api/asyncapi.json: the event catalogue (outbox/asyncapi.py), shown to whoever may see the
OpenAPI schema (API_DOCS_PUBLIC, shop/api.py)."""

from drf_spectacular.utils import extend_schema
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from outbox.asyncapi import asyncapi_document
from shop.api import ApiDocsVisible


class AsyncApiDocumentApi(APIView):
    permission_classes = [ApiDocsVisible]

    @extend_schema(exclude=True)  # a document of its own, not an operation of the API
    def get(self, request: Request) -> Response:
        return Response(asyncapi_document())
