"""Stream processors: validate -> dedup -> roll up, as faust agents (processors.worker)."""
