"""What a run reports: metrics on host arrays, tables over seeds, figures and report.md.

Nothing here runs a model: it reads scored arrays (:class:`dfm.report.scores.Scores`)
and writes files.
"""
