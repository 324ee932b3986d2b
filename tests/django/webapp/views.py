"""Views the tests read: what Django concluded about a request (`meta`), redirects of every
kind an app makes (`redirect_view`), a session counter (`session`), a health check, and for
the slow-client tests an upload sink (`upload`), a large response (`big`) and a request that
holds its worker for a while (`busy`)."""

import os
import time

from django.conf import settings
from django.http import HttpResponse, HttpResponseRedirect, JsonResponse
from django.urls import reverse
from django.views.decorators.csrf import csrf_exempt


def healthz(request):
    return HttpResponse("ok", content_type="text/plain")


def meta(request):
    """Every HTTP_* key of request.META and what Django derived from them."""
    seen = {key: value for key, value in request.META.items() if key.startswith("HTTP_")}
    for key in ("REMOTE_ADDR", "SCRIPT_NAME", "PATH_INFO", "wsgi.url_scheme"):
        seen[key] = request.META.get(key)
    seen["original_remote_addr"] = request.META.get("proxy.original_remote_addr")
    seen["is_secure"] = request.is_secure()
    seen["scheme"] = request.scheme
    seen["host"] = request.get_host()
    seen["port"] = request.get_port()
    seen["absolute_uri"] = request.build_absolute_uri()
    seen["path"] = request.path
    seen["backend"] = settings.BACKEND_NAME
    return JsonResponse(seen)


def redirect_view(request):
    """`?to=` absolute (the public URL Django builds), relative (the prefixed path), unprefixed
    (an app that ignores the mount prefix), backend (an app that ignores every forwarded header
    and names the server it runs on)."""
    to = request.GET.get("to", "absolute")
    if to == "absolute":
        location = request.build_absolute_uri(reverse("target"))
    elif to == "relative":
        location = reverse("target")
    elif to == "unprefixed":
        location = "/target/"
    elif to == "backend":
        server = f"{request.META['SERVER_NAME']}:{request.META['SERVER_PORT']}"
        location = f"http://{server}/target/"
    else:
        return HttpResponse(f"unknown to={to}\n", status=400, content_type="text/plain")
    return HttpResponseRedirect(location)


def target(request):
    return HttpResponse("target", content_type="text/plain")


def session(request):
    """Counts requests in the session: shows that a session lives on across backends."""
    count = request.session.get("count", 0) + 1
    request.session["count"] = count
    return JsonResponse({"count": count, "backend": settings.BACKEND_NAME})


@csrf_exempt
def upload(request):
    """Reads the whole request body (a sync worker is held until the last byte arrives)."""
    body = request.body
    return JsonResponse({"bytes": len(body), "pid": os.getpid(), "backend": settings.BACKEND_NAME})


def big(request):
    """`?size=` bytes of text: a response larger than socket buffers."""
    size = int(request.GET.get("size", "2000000"))
    line = b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ-+\n"
    body = (line * (size // len(line) + 1))[:size]
    return HttpResponse(body, content_type="text/plain")


def busy(request):
    """Holds its worker for `?ms=` milliseconds, then says which worker it was."""
    time.sleep(int(request.GET.get("ms", "100")) / 1000)
    return JsonResponse({"pid": os.getpid(), "backend": settings.BACKEND_NAME})
