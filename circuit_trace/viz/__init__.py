"""Interactive plotly view of a graph for notebooks and standalone HTML, and the offline static
viewer served by `circuit-trace serve`."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__all__ = [
    "plot",
    "show",
    "to_html",
    "widget",  # plotly_view
    "serve",
    "start_server",
    "ViewerServer",  # server
    "write_feature_details",
    "validate_feature_details",
    "feature_details_from_examples",
]

_WHERE = {
    "plot": "plotly_view",
    "show": "plotly_view",
    "to_html": "plotly_view",
    "widget": "plotly_view",
    "serve": "server",
    "start_server": "server",
    "ViewerServer": "server",
    "write_feature_details": "feature_details",
    "validate_feature_details": "feature_details",
    "feature_details_from_examples": "feature_details",
}


if TYPE_CHECKING:  # what the lazy names are, for type checkers and editors
    from .feature_details import feature_details_from_examples, validate_feature_details, write_feature_details
    from .plotly_view import plot, show, to_html, widget
    from .server import ViewerServer, serve, start_server


def __getattr__(name: str) -> Any:  # lazy: `import circuit_trace.viz` stays cheap (no plotly)
    mod = _WHERE.get(name)
    if mod is None:
        raise AttributeError(f"module 'circuit_trace.viz' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{mod}"), name)
    globals()[name] = value
    return value
