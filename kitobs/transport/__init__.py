"""kitobs.transport: where requests enter and leave a service, and where they are measured.

kitobs follows go-kit's layers. An *endpoint* (`kitobs.endpoint`) is business logic from request to
response; a *transport* turns a wire request into an endpoint call and back. Instrumentation
attaches at both layers, and each layer emits its own metric, so instrumenting both layers of one
request counts nothing twice:

- endpoint layer: ``kitobs_endpoint_duration_seconds{endpoint,outcome}``, a log line and an
  INTERNAL span per call (`kitobs.endpoint.instrument.instrument`, `instrumenting`);
- transport layer: ``http_server_request_duration_seconds``, ``http_server_active_requests`` and
  a SERVER span per request; ``http_client_request_duration_seconds`` and a CLIENT span per
  outgoing request; ``rpc_*`` for gRPC (`kitobs.transport.grpc`); ``messaging_*`` for NATS
  (`kitobs.transport.nats`: a SERVER or CONSUMER span per message, CLIENT or PRODUCER per send).

Attachment points, one module each (the names of `kitobs.contract`; route templates, never raw
paths; ``unmatched`` when no route matched; unknown methods ``_OTHER``):

==================  ===========================================  =============================
module              attach with                                   route template from
==================  ===========================================  =============================
``wsgi``            ``Middleware(app, metrics, tracer=...)``      ``route_getter`` /
                    ``Server(endpoint, decode, encode)``          ``environ["kitobs.route"]``
``asgi``            ``Middleware(app, metrics, tracer=...)``      ``scope["route"]`` after
                    ``Server(endpoint, decode, encode)``          routing / ``route_getter``
``flask``           ``instrument(app, kit)``                      ``request.url_rule``
``starlette``       ``asgi_app = instrument(app, kit)``           ``scope["route"].path``
(also FastAPI)
``django``          ``MIDDLEWARE = ["kitobs.transport.django..."  ``resolver_match.route``
                    + ``settings.KITOBS``
``httpclient``      httpx ``HTTPXTransport`` /                    (client: ``server_address``,
                    ``AsyncHTTPXTransport``, requests             ``server_port``)
                    ``RequestsAdapter``, ``urllib_handlers``
``grpc``            server and client interceptors                the RPC method
==================  ===========================================  =============================

What each transport records:

==============  ========  ======  ===========  ==========  ==================  =============
transport       duration  active  span         trace ctx   error_type          status
==============  ========  ======  ===========  ==========  ==================  =============
WSGI / Flask    yes       yes     SERVER       extracted   exception or 5xx    sent
ASGI / Starl.   yes       yes     SERVER       extracted   exception or 5xx    sent; 499 if
                                                                               client left
Django          yes       yes     SERVER       extracted   exception or 5xx    sent
httpx, requests yes       no      CLIENT       injected    exception or 5xx    received
urllib          yes       no      CLIENT       injected    exception or 5xx    received
==============  ========  ======  ===========  ==========  ==================  =============

Place server middleware outermost, so the 429s and 500s of inner middleware are counted. Shared
HTTP label rules live in `kitobs.transport.http`; the per-call recording every transport shares
(span from the carried context, duration, call line, recording failures counted) in
`kitobs.transport.core`. `httpclient.ClientEndpoint` is go-kit's HTTP client endpoint.
"""

__all__: list[str] = []
