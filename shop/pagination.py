"""The API's one pagination: ``?page=N``, N from 1, 20 items a page.

A page that is not a whole number of at least 1 is invalid input (400, naming the parameter);
a page past the last one is a 404, as DRF answers it. DRF's ``page=last`` is not offered: the
schema says a page is an integer, and the answer says how many there are (``count``).
"""

from rest_framework import exceptions, pagination


class PageInvalid(exceptions.ValidationError):
    parameter_in = "query"  # its keys name query parameters (shop/problems.py)


class PageNumberPagination(pagination.PageNumberPagination):
    last_page_strings = ()

    def get_page_number(self, request, paginator):
        value = request.query_params.get(self.page_query_param)
        if value is None:
            return 1
        if not (value.isascii() and value.isdigit()) or int(value) < 1:
            raise PageInvalid({self.page_query_param: ["A page is a whole number from 1."]})
        return int(value)
