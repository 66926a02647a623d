"""DNS: Consul-style service names answered from an in-memory view of the catalog."""
