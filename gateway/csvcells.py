"""The OWASP CSV cell rule lives in flowviz.core.csvcells (services render CSV too)."""

from flowviz.core.csvcells import FORMULA_STARTS, neutralise

__all__ = ["FORMULA_STARTS", "neutralise"]
