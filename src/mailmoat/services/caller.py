"""Who is making a request: the customer and the API key they used."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Caller:
    customer_id: str
    customer_handle: str
    key_id: str
