"""``stablernn reproduce``: the papers' claims rerun, decided by a rule stated in advance.

One module per job: :mod:`.scales` (sizes and budgets), :mod:`.runner` (runs, reuse by
provenance, divergence as an outcome), :mod:`.statistics` (the decision rule), :mod:`.paper002`
and :mod:`.paper000` (the claims), :mod:`.headline` (the headline numbers and their cost),
:mod:`.report` (the report). :func:`stablernn.experiments.reproduce.reproduce` runs them.
"""
