"""Ambassador: a TCP load balancer that lives in the client's network namespace."""

from waypost.ambassador.balancer import POLICIES, Backend, Balancer, Endpoint
from waypost.ambassador.routes import Ambassador, ConnLimiter, Options, Route, RouteSpec, parse_route

__all__ = [
    "POLICIES", "Ambassador", "Backend", "Balancer", "ConnLimiter", "Endpoint", "Options", "Route", "RouteSpec",
    "parse_route",
]
