"""Ambassador: a TCP load balancer that lives in the client's network namespace."""
