"""The ops layer: long-running surfaces for operators.

Owns: the metrics HTTP server and health (metrics.py), the Flower tab (flower.py), the demo
(demo.py) and the embedded Redis server used when none answers (embedded.py).

May import: everything below it (plugin, cluster/, github/, task, worker/, broker/, state/, routing,
config) and hub/ (the demo's local GitHub API). Only cli/ imports it.
"""
