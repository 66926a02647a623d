"""The embedded catalog: a single-node server speaking the Consul HTTP API subset Waypost uses."""
