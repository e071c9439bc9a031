"""Policies turn a statistics snapshot and a layout into plan actions (pure; never touch modules).

The policies themselves arrive with the plan issue; this package exists so the layout and the
import path are stable from the start.
"""

__all__: list[str] = []
