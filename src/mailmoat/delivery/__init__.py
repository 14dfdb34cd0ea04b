"""Durable delivery: the queue workers, SMTP relay to downstream servers, DSNs."""
