"""The headers and cookie flags every answer carries, set in one place.

The pages run only the scripts and style sheets in `static/` (htmx, portal.js, portal.css): the policy allows
no inline script, no inline style, no eval, no plugin and no framing by other sites. Over HTTPS, browsers are
told to keep to HTTPS (HSTS) and the session cookie is marked Secure. Behind a reverse proxy that ends TLS,
`TRUSTED_PROXIES` says how many proxies' X-Forwarded-* headers to believe, so the portal sees the scheme,
host and client address the browser used; left at 0, those headers are ignored, as anyone can send them.
"""

from flask import current_app, has_request_context, request
from flask.sessions import SecureCookieSessionInterface
from werkzeug.middleware.proxy_fix import ProxyFix

CONTENT_SECURITY_POLICY = "; ".join((
    "default-src 'self'",
    "script-src 'self'",
    "style-src 'self'",
    "object-src 'none'",
    "base-uri 'none'",
    "form-action 'self'",
    "frame-ancestors 'none'",
))

HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Frame-Options": "DENY",  # frame-ancestors' older spelling, for browsers that do not read the policy
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",  # addresses carry activity ids and return paths: not for other sites
}


class SessionInterface(SecureCookieSessionInterface):
    """Flask's signed-cookie session, with a Secure cookie whenever the request came over HTTPS (one portal can
    be reached both ways, e.g. the demo on http://127.0.0.1 and production on https://)."""

    def get_cookie_secure(self, app) -> bool:
        return super().get_cookie_secure(app) or (has_request_context() and request.is_secure)


def init_app(app):
    proxies = int(app.config.get("TRUSTED_PROXIES") or 0)
    if proxies:
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=proxies, x_proto=proxies, x_host=proxies, x_port=proxies)
    app.session_interface = SessionInterface()
    app.after_request(add_security_headers)


def add_security_headers(response):
    for name, value in HEADERS.items():
        response.headers.setdefault(name, value)
    seconds = int(current_app.config.get("HSTS_SECONDS") or 0)
    if request.is_secure and seconds:
        response.headers.setdefault("Strict-Transport-Security", f"max-age={seconds}")
    return response
