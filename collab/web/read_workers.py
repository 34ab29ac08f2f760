"""Imported first by the fork server that the expensive reads' workers start from
(collab.web.budget): it lowers the fork server's CPU priority before it imports
what the workers run, and every worker forked from it inherits that priority, so
that neither the fork server's start nor the workers' work takes the CPU from the
process with the event loop (acknowledgements, subscribes)."""

from __future__ import annotations

import os

NICENESS = 10  # added to the fork server's nice value, and so to its workers'

os.nice(NICENESS)
