"""Deterministic sample data for `make run`, `etl-assets generate-sample`, `files --sample` and
`seed-totesys`: Salesforce backups (salesforce.py), a file of every feed (files.py), the totesys
source's rows (totesys.py). The pipeline imports none of it."""
