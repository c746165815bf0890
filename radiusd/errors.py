"""Errors of the domain, shared by every layer (core and store upward): no layer imports a
higher one to raise or catch them."""
from __future__ import annotations


class UserError(ValueError):
    """Input the user can correct. The message names the field and the value.

    `field` is the field's name when the raiser knows it (admin.fields.fail sets it), so a form
    or the JSON API can put the message next to the field it is about.
    """

    def __init__(self, message: str = "", field: str | None = None):
        super().__init__(message)
        self.field = field


class Conflict(UserError):
    """Input that clashes with what the store already holds (a name or address in use): correctable
    like any UserError; the JSON API answers it with 409 rather than 400."""
