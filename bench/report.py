"""What the scripts of this folder share with ``revrnn bench`` (:mod:`revrnn.benchmark.results`):
the repository's root, the plain-text table, the commit and the machine for the JSON they write.
Imported by the scripts of this folder (run as ``python bench/<script>.py``, which puts this
folder on ``sys.path``)."""
from revrnn.benchmark.results import REPO as ROOT  # noqa: F401
from revrnn.benchmark.results import align, commit, meta  # noqa: F401
