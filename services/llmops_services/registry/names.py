"""Rules for the identifiers users choose: template ids, dataset and model names, aliases."""

from __future__ import annotations

import re
import secrets

from llmops_services.errors import FieldViolation, InvalidArgument

_SLUG = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


def new_id(prefix: str) -> str:
    """A server-made id such as `mdl-3f2a9c1b7e40`."""
    return f"{prefix}-{secrets.token_hex(6)}"


def check_slug(field: str, value: str) -> None:
    """Template ids and aliases: lowercase letters, digits, `-`, `_`; at most 63 characters."""
    if not _SLUG.match(value):
        raise InvalidArgument(
            f"{field} {value!r} is not a valid identifier",
            violations=[
                FieldViolation(
                    field,
                    "must be 1-63 of a-z, 0-9, '-', '_', not starting with '-' or '_'",
                )
            ],
        )


def check_name(field: str, value: str) -> None:
    """Dataset and model names: letters, digits, `.`, `-`, `_`; at most 128 characters; no `@`."""
    if not _NAME.match(value):
        raise InvalidArgument(
            f"{field} {value!r} is not a valid name",
            violations=[
                FieldViolation(
                    field,
                    "must be 1-128 letters, digits, '.', '-' or '_', starting alphanumeric",
                )
            ],
        )


def require(field: str, value: str) -> None:
    """Refuses an empty required field."""
    if not value:
        raise InvalidArgument(
            f"{field} is required", violations=[FieldViolation(field, "required")]
        )
