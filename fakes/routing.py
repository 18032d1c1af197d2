"""How a request picks its answer: scripted rules (faults, ERP responses) and a path router."""

from __future__ import annotations

import re
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from .messages import RecordedRequest, Reply


@dataclass
class Rule:
    """A scripted answer used up to ``times`` times (None = forever) by requests it ``matches``,
    once the first ``after`` of them went through unchanged."""

    matches: Callable[[RecordedRequest], bool]
    reply: Reply
    times: int | None = 1
    after: int = 0


@dataclass
class RuleList:
    """Scripted answers, newest first, thread-safe: the shape shared by faults and ERP responses."""

    _rules: list[Rule] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, rule: Rule) -> None:
        with self._lock:
            self._rules.insert(0, rule)

    def clear(self) -> None:
        with self._lock:
            self._rules.clear()

    def take(self, request: RecordedRequest) -> Reply | None:
        """The reply of the newest matching rule, consuming one of its uses."""
        with self._lock:
            for rule in self._rules:
                if rule.matches(request):
                    if rule.after > 0:
                        rule.after -= 1
                        continue
                    if rule.times is not None:
                        rule.times -= 1
                        if rule.times <= 0:
                            self._rules.remove(rule)
                    return rule.reply
        return None


class Router:
    """Maps (method, path regex with named groups) to handler functions."""

    def __init__(self):
        self._routes: list[tuple[str, re.Pattern, Callable[..., Reply]]] = []

    def add(self, method: str, pattern: str, func: Callable[..., Reply]) -> None:
        self._routes.append((method, re.compile(pattern), func))

    def dispatch(self, request: RecordedRequest) -> Reply:
        path_known = False
        for method, pattern, func in self._routes:
            found = pattern.fullmatch(request.path)
            if found:
                if method == request.method:
                    return func(request, **found.groupdict())
                path_known = True
        if path_known:
            return Reply(405, {"detail": f'Method "{request.method}" not allowed.'})
        return Reply(404, {"detail": "Not found."})
