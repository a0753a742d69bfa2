"""What the registry announces to the layers above it. Deployments follow aliases; the registry
sits below deployments, so it announces a moved alias instead of calling deployments."""

from __future__ import annotations

from django.dispatch import Signal

# Sent (synchronously, inside the transaction that moved the alias) with ``actor``, ``model``
# and ``alias``. A receiver's exception rolls the move back, as a direct call would.
alias_moved = Signal()
