"""What each aggregation protocol was measured to cost in the last benchmark run.

The numbers live in ``measured_costs.json`` beside this module, shipped in the
wheel (an installed fedpriv has no ``benchmarks/`` folder).  That file is
generated, never edited by hand: ``python benchmarks/export_costs.py`` rebuilds
it from ``benchmarks/results/secagg.json`` and ``benchmarks/results/ckks.json``
after those benchmarks ran.  Each protocol's headline cost is one round at a
stated client count and vector size; ``points`` holds every setting measured.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass
from functools import cache
from importlib import resources
from typing import Any

logger = logging.getLogger(__name__)

COSTS_FILE = "measured_costs.json"


@dataclass(frozen=True)
class CostPoint:
    """One measured setting: a round of ``clients`` clients over ``vector_size`` floats."""

    clients: int
    vector_size: int
    client_s: float
    """Seconds of one client's protocol work in the round (mean over clients)."""
    server_s: float
    """Seconds of the server's protocol work in the round."""
    bytes_up_per_client: float
    """Bytes one client uploads in the round (a float32 upload is 4 × ``vector_size``)."""


@dataclass(frozen=True)
class MeasuredCost:
    """A protocol's measured cost per round, and where the numbers come from."""

    protocol: str
    clients: int
    vector_size: int
    client_s: float
    server_s: float
    bytes_up_per_client: float
    source: str
    """The benchmark result file, relative to the repository (``benchmarks/results/…``)."""
    date: str
    """Day the result file was last written (``YYYY-MM-DD``)."""
    conditions: str
    """How it was measured: dropouts, repeats, machine."""
    points: tuple[CostPoint, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """Return plain JSON-able data (``--json`` output, the costs file)."""
        data = asdict(self)
        data["points"] = [asdict(p) for p in self.points]
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> MeasuredCost:
        """Build from :meth:`to_dict` output."""
        fields = dict(data)
        points = tuple(CostPoint(**p) for p in fields.pop("points", ()))
        return cls(points=points, **fields)


@cache
def _load() -> dict[str, MeasuredCost]:
    try:
        text = resources.files("fedpriv.protocols").joinpath(COSTS_FILE).read_text("utf-8")
        raw = json.loads(text)
        return {name: MeasuredCost.from_dict(entry) for name, entry in raw["protocols"].items()}
    except (OSError, ValueError, KeyError, TypeError) as err:
        logger.warning("no measured protocol costs (%s: %s); regenerate them with "
                       "`python benchmarks/export_costs.py`", type(err).__name__, err)
        return {}


def measured_costs() -> dict[str, MeasuredCost]:
    """Return the measured cost of every benchmarked protocol, by name."""
    return dict(_load())


def measured_cost(name: str) -> MeasuredCost | None:
    """Return the measured cost of protocol ``name``, or None when it was not benchmarked."""
    return _load().get(name)
