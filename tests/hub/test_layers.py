"""The hub's modules import each other without cycles, in the layers its package docstring describes.

grimp reads every import statement, including those inside functions and under
``TYPE_CHECKING``, without importing anything.
"""

from __future__ import annotations

import grimp
import pytest

HUB = "sentinel_celery.hub"

# Top to bottom, as in sentinel_celery/hub/__init__.py; a set is a layer of modules independent of each other.
LAYERS = [
    "pytest_plugin",
    "app",
    "server",
    "pipeline",
    {"api", "admin", "html"},
    "events",
    "shapes",
    "context",
    "routing",
    "state",
    {"store", "auth"},
    {"git", "apps"},
    {"timestamps", "loopback", "db", "markdown", "limits", "apiversion", "ratelimit", "faults", "requestlog", "webhooks"},
    "errors",
]


@pytest.fixture(scope="module")
def graph() -> grimp.ImportGraph:
    return grimp.build_graph("sentinel_celery", cache_dir=None)


def hub_modules(graph: grimp.ImportGraph) -> set[str]:
    return {m for m in graph.modules if m == HUB or m.startswith(HUB + ".")}


def test_no_import_cycle_goes_through_the_hub(graph):
    modules = hub_modules(graph)
    cycles = []
    for importer in sorted(modules):
        for imported in sorted(graph.find_modules_directly_imported_by(importer)):
            back = graph.find_shortest_chain(importer=imported, imported=importer)
            if back is not None:
                cycles.append(" -> ".join((importer, *back)))
    assert cycles == []


def test_every_hub_module_has_a_layer(graph):
    listed = {name for layer in LAYERS for name in ([layer] if isinstance(layer, str) else layer)}
    tops = {m.split(".")[2] for m in hub_modules(graph) if m != HUB}
    assert tops == listed


def test_imports_only_go_down_the_layers(graph):
    illegal = graph.find_illegal_dependencies_for_layers(layers=LAYERS, containers={HUB})
    assert [f"{d.importer} -> {d.imported}" for d in sorted(illegal, key=str)] == []

