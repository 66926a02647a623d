"""DNS tests (the package is waypost.dns; `dns` itself is dnspython here)."""
