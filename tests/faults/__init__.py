"""The fault suite: bad input, hostile neighbours and security properties, against real processes."""
