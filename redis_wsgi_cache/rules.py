"""Per-path rules: what the operator says of the responses under some paths,
on top of the settings. Parsed once at start-up; pure.

A rule is a pattern on the path (a glob such as ``/static/*``, or a regular
expression starting with ``^``), then any of:

- ``ttl=N``: the lifetime of responses without explicit freshness (instead of
  ``default_ttl``);
- ``bypass``: requests go to the app, neither served from nor stored in the cache;
- ``tags=a,b`` (or ``tags="a b"``): tags given to the responses stored;
- ``stale_while_revalidate=N``, ``stale_if_error=N``: the windows of responses
  that do not give their own;
- ``heuristic_max=N``: the longest heuristic freshness (instead of
  ``heuristic_max``; ``0`` keeps the rule's ``ttl`` exact).

In setup.cfg or the environment, one rule a line::

    rules =
        /static/*  ttl=86400 tags=static
        /admin/*   bypass
        ^/users/[0-9]+$  ttl=30 stale_while_revalidate=10

In code, a list of such lines or of dicts (``{"path": "/static/*", "ttl": 86400}``).
The first rule whose pattern matches the request's path applies.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import re
import shlex
import typing as t
from collections.abc import Iterable, Mapping

from .tags import is_tag, split_tags

# Rule options that take a number of seconds.
_SECONDS = ("ttl", "stale_while_revalidate", "stale_if_error", "heuristic_max")
# The longest any duration (a setting's or a rule's) may be: a year. Longer is a
# typo, and would make Redis refuse the expiry (or keep a key for good).
MAX_SECONDS = 365 * 24 * 3600


@dataclasses.dataclass(frozen=True)
class Rule:
    """One rule: its pattern (as written), and what it sets (None: unset)."""

    pattern: str
    ttl: int | None = None
    bypass: bool = False
    tags: tuple[str, ...] = ()
    stale_while_revalidate: int | None = None
    stale_if_error: int | None = None
    heuristic_max: int | None = None

    @property
    def overrides(self) -> dict[str, t.Any]:
        """The settings this rule replaces, by setting name."""
        values = {
            "default_ttl": self.ttl,
            "stale_while_revalidate": self.stale_while_revalidate,
            "stale_if_error": self.stale_if_error,
            "heuristic_max": self.heuristic_max,
        }
        return {name: value for name, value in values.items() if value is not None}


class Rules:
    """Rules in order, compiled into one regular expression: finding the rule
    of a path is one match, whatever the number of rules."""

    def __init__(self, rules: Iterable[Rule] = ()) -> None:
        self.rules = tuple(rules)
        alternatives = [
            f"(?P<rule{number}>{_regex(rule.pattern)})" for number, rule in enumerate(self.rules)
        ]
        self._any = re.compile("|".join(alternatives)) if alternatives else None

    def __bool__(self) -> bool:
        return bool(self.rules)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Rules) and other.rules == self.rules

    def __hash__(self) -> int:
        return hash(self.rules)

    def __repr__(self) -> str:
        return f"Rules({list(self.rules)!r})"

    def match(self, path: str) -> Rule | None:
        """The first rule whose pattern matches ``path``, or None."""
        found = self._any.match(path) if self._any is not None else None
        if found is None or found.lastgroup is None:
            return None
        # The rule's group closes last: a pattern's own groups are inside it.
        return self.rules[int(found.lastgroup.removeprefix("rule"))]


def _regex(pattern: str) -> str:
    """A rule's pattern as a regular expression matching a whole path (a glob)
    or its start (a regular expression, anchored with ``^``)."""
    if pattern.startswith("^"):
        return pattern[1:]
    return fnmatch.translate(pattern).removeprefix("(?s:").removesuffix(")\\Z") + r"\Z"


def parse_rules(value: str | Iterable[str | Mapping[str, t.Any]]) -> Rules:
    """Rules from setup.cfg text (one a line) or from code (a list of lines or
    of dicts); :class:`ValueError` naming the rule that is malformed."""
    items: list[str | Mapping[str, t.Any]]
    if isinstance(value, str):
        lines = (line.strip() for line in value.splitlines())
        items = [line for line in lines if line and not line.startswith("#")]
    else:
        items = list(value)
    return Rules(_parse_one(item, number) for number, item in enumerate(items, 1))


def _parse_one(item: str | Mapping[str, t.Any], number: int) -> Rule:
    where = f"rule {number} ({item!r})"
    if isinstance(item, str):
        try:
            words = shlex.split(item)
        except ValueError as error:
            raise ValueError(f"{where}: {error}") from None
        if not words:
            raise ValueError(f"{where}: empty")
        pattern: object = words[0]
        options: dict[str, t.Any] = {}
        for word in words[1:]:
            name, has_value, argument = word.partition("=")
            options[name] = argument if has_value else True
    elif isinstance(item, Mapping):
        options = dict(item)
        pattern = options.pop("path", None)
    else:
        raise ValueError(f"{where}: expected a line or a dict")
    if not isinstance(pattern, str):
        raise ValueError(f"{where}: needs a 'path' (a glob, or a regular expression with ^)")
    try:
        re.compile(_regex(pattern))
    except re.error as error:
        raise ValueError(f"{where}: bad pattern: {error}") from None
    values: dict[str, t.Any] = {}
    for name, argument in options.items():
        if name in _SECONDS:
            values[name] = _seconds(argument, f"{where}: {name}")
        elif name == "bypass":
            if argument not in (True, "true", "yes", "1"):
                raise ValueError(f"{where}: bypass takes no value")
            values["bypass"] = True
        elif name == "tags":
            values["tags"] = _tags(argument, where)
        else:
            raise ValueError(
                f"{where}: unknown option {name!r}; expected ttl, bypass, tags,"
                " stale_while_revalidate, stale_if_error or heuristic_max"
            )
    if not values:
        raise ValueError(f"{where}: says nothing (give ttl, bypass, tags or a window)")
    return Rule(pattern, **values)


def _seconds(argument: t.Any, where: str) -> int:
    text = str(argument)
    if isinstance(argument, bool) or not text.isdigit() or int(text) > MAX_SECONDS:
        raise ValueError(f"{where}: expected a whole number of seconds from 0 to {MAX_SECONDS}")
    return int(text)


def _tags(argument: t.Any, where: str) -> tuple[str, ...]:
    if isinstance(argument, str):
        tags = tuple(split_tags(argument))
    elif isinstance(argument, (list, tuple)):
        tags = tuple(str(tag) for tag in argument)
    else:
        tags = ()
    if not tags or not all(is_tag(tag) for tag in tags):
        raise ValueError(
            f"{where}: expected tags (printable, no spaces or commas), separated by commas"
        )
    return tags
