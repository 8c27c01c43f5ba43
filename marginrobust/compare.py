"""Moved to :mod:`marginrobust.report.compare`; this module only re-exports its names."""

from .report.compare import FORMATS, compare, compare_plot, format_compare

__all__ = ["FORMATS", "compare", "compare_plot", "format_compare"]
