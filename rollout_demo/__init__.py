"""`rollout demo`: the real controller flow over a replayed, simulated day, offline.

scenario.py holds the story (config, SLO series, scenes) and checks.py judges each scene; both
are pure. runner.py wires Redis, Prefect's ephemeral API and the console; timeline.py draws
the PNG.
"""
