"""Errors of the domain, shared by every layer (core and store upward): no layer imports a
higher one to raise or catch them."""
from __future__ import annotations


class UserError(ValueError):
    """Input the user can correct. The message names the field and the value."""
