"""The WSGI entry point, wrapped in `ForwardedFromProxy`.

Django takes the scheme, host and port from forwarded headers when told to (settings.py), but
never the client's address or the path prefix the proxy mounted the site under: deployments add
a WSGI middleware for those (werkzeug's ProxyFix with x_for and x_prefix, nginx's realip). This
is that middleware, trusting only the proxies listed in TRUSTED_PROXIES: a request from anyone
else keeps the address it came from and an empty prefix, whatever headers it carries.
"""

import ipaddress
import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "webapp.settings")


def parse_trusted(spec):
    """TRUSTED_PROXIES: comma-separated addresses or networks, and `unix` for peers on a unix
    socket (only processes that may open the socket file can connect; WSGI servers report them
    with an empty REMOTE_ADDR)."""
    networks, unix = [], False
    for item in filter(None, (part.strip() for part in spec.split(","))):
        if item == "unix":
            unix = True
        else:
            networks.append(ipaddress.ip_network(item, strict=False))
    return networks, unix


def is_trusted(address, networks, unix):
    if not address:
        return unix
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in network for network in networks)


class ForwardedFromProxy:
    """From a trusted peer: REMOTE_ADDR from X-Forwarded-For, walked from the right past every
    trusted proxy (each one appends the address it saw, so the rightmost untrusted entry is the
    first one no trusted proxy can vouch for: the client); SCRIPT_NAME from X-Forwarded-Prefix,
    removed from PATH_INFO if the proxy left it there. The original address is kept in
    `proxy.original_remote_addr`."""

    def __init__(self, app, trusted_spec):
        self.app = app
        self.networks, self.unix = parse_trusted(trusted_spec)

    def __call__(self, environ, start_response):
        peer = environ.get("REMOTE_ADDR", "")
        environ["proxy.original_remote_addr"] = peer
        if is_trusted(peer, self.networks, self.unix):
            self.apply_client(environ)
            self.apply_prefix(environ)
        return self.app(environ, start_response)

    def apply_client(self, environ):
        chain = [
            entry.strip()
            for entry in environ.get("HTTP_X_FORWARDED_FOR", "").split(",")
            if entry.strip()
        ]
        if not chain:
            return
        client = chain[0]
        for entry in reversed(chain):
            if not is_trusted(entry, self.networks, False):
                client = entry
                break
        environ["REMOTE_ADDR"] = client

    def apply_prefix(self, environ):
        prefix = environ.get("HTTP_X_FORWARDED_PREFIX", "").strip().rstrip("/")
        if not prefix.startswith("/"):
            return
        path = environ.get("PATH_INFO", "")
        if path == prefix or path.startswith(prefix + "/"):
            environ["PATH_INFO"] = path[len(prefix):] or "/"
        environ["SCRIPT_NAME"] = prefix


application = ForwardedFromProxy(
    get_wsgi_application(), os.environ.get("TRUSTED_PROXIES", "")
)
