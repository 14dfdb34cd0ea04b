"""Who is making a request: the customer and the API key they used."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Actor:
    """Who acts, as the audit trail names them: an API key, a console session, mailmoat."""

    customer_id: str
    name: str


@dataclass(frozen=True, slots=True)
class Caller:
    customer_id: str
    customer_handle: str
    key_id: str
    # How the audit trail names this caller; an API key by its id unless set.
    name: str = ""

    @property
    def actor(self) -> Actor:
        return Actor(self.customer_id, self.name or f"API key {self.key_id[:12]}")
