"""SQL aggregates Django does not ship."""

from __future__ import annotations

from django.db.models import Aggregate


class Percentile(Aggregate):
    """PostgreSQL's `percentile_cont`: the value below which `fraction` of the values lie."""

    function = "PERCENTILE_CONT"
    template = "%(function)s(%(fraction)s) WITHIN GROUP (ORDER BY %(expressions)s)"

    def __init__(self, expression, *, fraction: float, **extra):
        super().__init__(expression, fraction=float(fraction), **extra)
