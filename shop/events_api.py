"""GET /api/asyncapi.json: the event catalogue (outbox/asyncapi.py), public like the schema."""

from django.http import JsonResponse
from django.views.decorators.http import require_safe

from outbox.asyncapi import asyncapi_document


@require_safe
def asyncapi_json(request):
    return JsonResponse(asyncapi_document())
