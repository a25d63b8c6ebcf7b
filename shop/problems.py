"""One error format under /api/: RFC 9457 problem details (``application/problem+json``).

Every error an API client can meet is a JSON object with ``type``, ``title``, ``status``,
``detail`` and ``instance``, plus ``code`` (a stable, machine-readable name) and, for invalid
input, ``errors``: one entry per message, each naming where it points (a JSON pointer into the
body, a header or a query parameter). That covers DRF's own errors (through
``exception_handler``), routes that do not exist under /api/ (``api_not_found``, the last URL
pattern, so that it answers in JSON even with debug on), and what Django itself answers outside
any view (``handler400/403/404/500``, which keep Django's HTML pages outside /api/).

A server error's body says only that it happened: no exception text, no traceback.
"""

from __future__ import annotations

import traceback
from collections.abc import Iterator
from http import HTTPStatus

from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.core.exceptions import ValidationError as DjangoValidationError
from django.http import Http404, HttpRequest, JsonResponse
from django.urls import Resolver404, resolve
from django.views import defaults
from django.views.decorators.csrf import csrf_exempt
from rest_framework import exceptions
from rest_framework.request import Request
from rest_framework.settings import api_settings
from rest_framework.views import set_rollback

PROBLEM_CONTENT_TYPE = "application/problem+json"
API_PREFIX = "/api/"
NESTED_TOO_DEEPLY = "JSON parse error - the document is nested too deeply"

# The problem types with a meaning of their own; every other problem is "about:blank", whose
# meaning is its HTTP status (RFC 9457, section 4.2.1). docs/api.md lists them.
PROBLEM_TYPES = {
    "invalid": "urn:shop:problem:invalid-request",
    "parse_error": "urn:shop:problem:malformed-body",
    "idempotency_key_reused": "urn:shop:problem:idempotency-key-reused",
}


def problem_response(
    *,
    status: int,
    detail: str,
    code: str,
    instance: str,
    errors: list[dict] | None = None,
    headers: dict[str, str] | None = None,
) -> JsonResponse:
    body = {
        "type": PROBLEM_TYPES.get(code, "about:blank"),
        "title": HTTPStatus(status).phrase,
        "status": status,
        "detail": detail,
        "instance": instance,
        "code": code,
    }
    if errors is not None:
        body["errors"] = errors
    response = JsonResponse(body, status=status, content_type=PROBLEM_CONTENT_TYPE)
    for name, value in (headers or {}).items():
        response[name] = value
    return response


# --- DRF's errors -----------------------------------------------------------------------------


def exception_handler(exc, context):
    """DRF's EXCEPTION_HANDLER: every APIException (and Django's Http404, PermissionDenied and
    ValidationError) as a problem document; anything else stays a server error (None)."""
    exc = _as_api_exception(exc)
    if not isinstance(exc, exceptions.APIException):
        return None
    headers = {}
    if getattr(exc, "auth_header", None):
        headers["WWW-Authenticate"] = exc.auth_header
    if getattr(exc, "wait", None) is not None:
        headers["Retry-After"] = str(max(1, int(exc.wait + 0.999)))
    set_rollback()
    request = context["request"]
    if isinstance(exc, exceptions.ValidationError):
        errors = list(_field_errors(exc.detail, getattr(exc, "parameter_in", None)))
        detail = errors[0]["detail"] if len(errors) == 1 else _several(errors)
        return problem_response(
            status=exc.status_code,
            detail=detail,
            code="invalid",
            instance=request.path,
            errors=errors,
            headers=headers,
        )
    return problem_response(
        status=exc.status_code,
        detail=str(exc.detail),
        code=getattr(exc.detail, "code", None) or exc.default_code,
        instance=request.path,
        headers=headers,
    )


def _as_api_exception(exc):
    if isinstance(exc, Http404):
        return exceptions.NotFound()
    if isinstance(exc, DjangoPermissionDenied):
        return exceptions.PermissionDenied()
    if isinstance(exc, DjangoValidationError):
        detail = exc.message_dict if hasattr(exc, "error_dict") else exc.messages
        return exceptions.ValidationError(detail=detail)
    if isinstance(exc, RecursionError) and _raised_parsing_the_body(exc):
        # Views with parsers of their own do not use shop.api.JSONParser.
        return exceptions.ParseError(NESTED_TOO_DEEPLY)
    return exc


def _raised_parsing_the_body(exc: BaseException) -> bool:
    return any(
        frame.f_code is Request._parse.__code__ for frame, _ in traceback.walk_tb(exc.__traceback__)
    )


def _several(errors: list[dict]) -> str:
    return f"The request has {len(errors)} errors; each is listed in errors."


def _field_errors(detail, parameter_in: str | None, path: tuple[str, ...] = ()) -> Iterator[dict]:
    """DRF's nested error detail as a flat list: each message with the place it points at."""
    if isinstance(detail, dict):
        for key, value in detail.items():
            inner = path if key == api_settings.NON_FIELD_ERRORS_KEY else (*path, str(key))
            yield from _field_errors(value, parameter_in, inner)
    elif isinstance(detail, list):
        for index, item in enumerate(detail):
            if isinstance(item, dict | list):
                yield from _field_errors(item, parameter_in, (*path, str(index)))
            else:
                yield from _field_errors(item, parameter_in, path)
    else:
        error = {"detail": str(detail), "code": getattr(detail, "code", None) or "invalid"}
        if parameter_in and path:
            error[_WHERE[parameter_in]] = path[0]
        else:
            error["pointer"] = _json_pointer(path)
        yield error


# Where a parameter's error points: {"header": "Idempotency-Key"}, {"parameter": "page"}.
_WHERE = {"header": "header", "query": "parameter"}


def _json_pointer(path: tuple[str, ...]) -> str:
    """RFC 6901, as a URI fragment (the form RFC 9457's own example uses): "#/lines/1/sku"."""
    return "#" + "".join("/" + part.replace("~", "~0").replace("/", "~1") for part in path)


# --- what Django answers outside the API's views ------------------------------------------------


@csrf_exempt
def api_not_found(request: HttpRequest, *args, **kwargs) -> JsonResponse:
    """Any path under /api/ that no route matched, whatever the method: a 404 problem."""
    detail = "There is no such resource."
    if not request.path.endswith("/") and _resolves(request.path + "/"):
        detail += f" Did you mean {request.path}/ (with a trailing slash)?"
    return problem_response(status=404, detail=detail, code="not_found", instance=request.path)


def _resolves(path: str) -> bool:
    try:
        return resolve(path).func is not api_not_found
    except Resolver404:
        return False


def _for_api(request: HttpRequest) -> bool:
    return request.path.startswith(API_PREFIX)


def bad_request(request, exception, template_name=defaults.ERROR_400_TEMPLATE_NAME):
    if _for_api(request):
        detail = "The request cannot be served (malformed or too large)."
        return problem_response(
            status=400, detail=detail, code="bad_request", instance=request.path
        )
    return defaults.bad_request(request, exception, template_name)


def permission_denied(request, exception, template_name=defaults.ERROR_403_TEMPLATE_NAME):
    if _for_api(request):
        detail = "You do not have permission to perform this action."
        return problem_response(
            status=403, detail=detail, code="permission_denied", instance=request.path
        )
    return defaults.permission_denied(request, exception, template_name)


def page_not_found(request, exception, template_name=defaults.ERROR_404_TEMPLATE_NAME):
    if _for_api(request):
        return api_not_found(request)
    return defaults.page_not_found(request, exception, template_name)


def server_error(request, template_name=defaults.ERROR_500_TEMPLATE_NAME):
    if _for_api(request):
        detail = "The server failed to complete the request; it has been logged."
        return problem_response(status=500, detail=detail, code="error", instance=request.path)
    return defaults.server_error(request, template_name)
