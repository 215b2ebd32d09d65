"""Reports: a run scored out-of-fold (`evaluate` computes a `Report`), its costs and flat
controls, rendered as report.json, report.md, report.html, figures, a CSV, and the command
line's lines."""
