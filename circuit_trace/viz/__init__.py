"""Interactive plotly view of a graph for notebooks and standalone HTML, and the offline static
viewer served by `circuit-trace serve`."""
