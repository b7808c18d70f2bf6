"""Authentication middleware for endpoints: HTTP Basic (`kitobs.auth.basic`) and JWT bearer
tokens (`kitobs.auth.jwt`), on go-kit's ``auth/basic`` and ``auth/jwt``.

Each is an endpoint `kitobs.endpoint.Middleware`. It reads the credential from the request
context's ``authorization`` metadata (`kitobs.endpoint.context`: the HTTP ``Authorization``
header, or the gRPC ``authorization`` metadata, which every kitobs server transport puts there),
checks it, and calls the endpoint with what it learnt added to the context's values: the user
name under `USER`, a token's claims under `CLAIMS`::

    >>> from kitobs.endpoint import context
    >>> def whoami(request):
    ...     return context.current().values[USER]
    >>> with context.scoped(values={USER: "ada"}):
    ...     whoami(None)
    'ada'

A refused request raises `Unauthenticated` to the caller: a `kitobs.endpoint.RequestError`
with status 401, the scheme's ``WWW-Authenticate`` header, gRPC status ``UNAUTHENTICATED`` and
``outcome="unauthenticated"``. It is one error for every failure mode (no header, a malformed
one, a wrong password, an expired token...), so a caller learns nothing about which check
failed; the reason is counted in ``kitobs_auth_failures_total{scheme,reason}`` only (reasons in
`kitobs.contract.AUTH_FAILURE_REASONS`). Neither the credential nor the token ever appears in a
label, a log line or a span.

This module needs only the standard library; `kitobs.auth.jwt` needs PyJWT
(``pip install 'kitobs[jwt]'``).
"""

from __future__ import annotations

from kitobs.endpoint import RequestError

__all__ = ["CLAIMS", "USER", "Unauthenticated"]

#: USER is the request context value key holding the authenticated user name (basic auth).
USER = "user"
#: CLAIMS is the request context value key holding a verified token's claims (JWT), read-only.
CLAIMS = "claims"


class Unauthenticated(RequestError):
    """Unauthenticated is a request refused for want of valid credentials, e.g. a bad password.

    The server transports answer it with 401 and its ``WWW-Authenticate`` header (gRPC:
    ``UNAUTHENTICATED``). Its message is ``"unauthorized"`` whatever failed::

        >>> err = Unauthenticated(headers={"WWW-Authenticate": 'Basic realm="api"'})
        >>> err.status_code, err.grpc_status, err.outcome, str(err)
        (401, 'UNAUTHENTICATED', 'unauthenticated', 'unauthorized')
    """

    status_code = 401
    grpc_status = "UNAUTHENTICATED"
    outcome = "unauthenticated"

    def __init__(
        self, message: str = "unauthorized", *, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message, headers=headers)
