"""Tells which backend answered: `X-Backend: $BACKEND_NAME` on every response, so tests through
the balancer see where a request went (stickiness, balancing)."""

from django.conf import settings


def backend_name(get_response):
    def middleware(request):
        response = get_response(request)
        response["X-Backend"] = settings.BACKEND_NAME
        return response

    return middleware
