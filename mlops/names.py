"""The names the project records under in MLflow: the registry's aliases, the tags people
filter on and the code reads back, and the artifact files a run writes. Writers and readers
(the flows, lineage, reproduce, serving) take them from here, so a name cannot drift apart
between the side that records and the side that reads."""

from __future__ import annotations

# -- aliases: which version serves, which one waits, and where a rollback goes ----------------
CHAMPION = "champion"
CHALLENGER = "challenger"
PREVIOUS = "previous"
