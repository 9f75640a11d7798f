"""HTTP handlers: parse and validate, make one call, serialize."""
