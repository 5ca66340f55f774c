"""Pages and API handlers stay thin: they parse the request, call one selector
(a read) or service (a write) and render. A database query in a ``views.py``,
``api.py`` or ``*_api.py`` module belongs in its app's ``selectors.py`` or
``services.py``; this test names the file and line of any that creeps back.

The check reads the source (no import, no database) and looks for what only a
query can be, so an ordinary ``dict.get`` or ``list.count`` never trips it:

- a model manager: any ``.objects`` (or ``_default_manager``) attribute;
- Django's shortcuts ``get_object_or_404`` and ``get_list_or_404``;
- a method only a queryset or a related manager has (``.filter(``,
  ``.select_related(``, ``.exists()``, …), and the ambiguous ones in the shape
  only a queryset uses: ``.get(`` with keyword arguments only, ``.count()``
  and ``.values(…)`` with arguments only as a queryset takes them;
- an instance write: ``.save(`` and ``.delete(`` without positional arguments
  (``router.delete("/path")`` declares an endpoint).
"""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
HANDLER_MODULES = sorted(
    path
    for pattern in ("*/views.py", "*/api.py", "*/*_api.py")
    for path in ROOT.glob(pattern)
    if path.parent.name not in {"tests", ".venv"}
)

MANAGERS = {"objects", "_default_manager", "_base_manager"}
SHORTCUTS = {"get_object_or_404", "get_list_or_404", "aget_object_or_404", "aget_list_or_404"}
# Names no builtin type or common helper carries: a call of one is a query.
QUERYSET_ONLY = {
    "filter",
    "exclude",
    "select_related",
    "prefetch_related",
    "annotate",
    "aggregate",
    "order_by",
    "values_list",
    "only",
    "defer",
    "exists",
    "distinct",
    "select_for_update",
    "in_bulk",
    "bulk_create",
    "bulk_update",
    "get_or_create",
    "update_or_create",
    "first",
    "last",
    "earliest",
    "latest",
    "all",
    "none",
    "raw",
}
WRITES = {"save", "delete", "asave", "adelete"}


def _query_reason(node: ast.AST) -> str | None:
    if isinstance(node, ast.Attribute) and node.attr in MANAGERS:
        return f"model manager .{node.attr}"
    if not isinstance(node, ast.Call):
        return None
    func = node.func
    if isinstance(func, ast.Name) and func.id in SHORTCUTS:
        return f"{func.id}()"
    if not isinstance(func, ast.Attribute):
        return None
    name, args, keywords = func.attr, node.args, node.keywords
    if name in QUERYSET_ONLY:
        return f"queryset .{name}()"
    if name in WRITES and not args:  # ``router.delete("/path")`` declares an endpoint
        return f"model .{name}()"
    if name == "get" and keywords and not args:  # dict.get takes its key positionally
        return "queryset .get(…=…)"
    if name == "count" and not args and not keywords:  # list.count and str.count need an argument
        return "queryset .count()"
    if name == "values" and (args or keywords):  # dict.values takes none
        return "queryset .values(…)"
    return None


def query_sites(path: Path, root: Path = ROOT) -> list[str]:
    """``file:line: what`` for every query in ``path``."""
    tree = ast.parse(path.read_text(), filename=str(path))
    found = [(node.lineno, reason) for node in ast.walk(tree) if (reason := _query_reason(node)) is not None]
    return [f"{path.relative_to(root)}:{line}: {reason}" for line, reason in sorted(found)]


def test_the_handler_modules_are_found():
    names = {str(path.relative_to(ROOT)) for path in HANDLER_MODULES}
    assert {"agents/views.py", "agents/api.py", "dashboard/views.py", "billing/api.py"} <= names


@pytest.mark.parametrize("path", HANDLER_MODULES, ids=lambda path: str(path.relative_to(ROOT)))
def test_views_and_api_handlers_leave_queries_to_selectors_and_services(path):
    sites = query_sites(path)
    assert not sites, "query these through a selector or service:\n" + "\n".join(sites)


def _sites_in(tmp_path: Path, body: str) -> list[str]:
    module = tmp_path / "views.py"
    module.write_text("def page(request, Agent, agent):\n" + body)
    return [site.split(": ", 1)[1] for site in query_sites(module, root=tmp_path)]


def test_the_check_names_each_query_it_finds(tmp_path):
    found = _sites_in(
        tmp_path,
        "    agent.deployments.filter(status='active').first()\n"
        "    Agent.objects.all()\n"
        "    get_object_or_404(Agent, pk=1)\n"
        "    agent.phone_numbers.get(pk=2)\n"
        "    agent.traces.count()\n"
        "    agent.save(update_fields=['name'])\n",
    )
    assert sorted(found) == sorted(
        [
            "queryset .filter()",
            "queryset .first()",
            "model manager .objects",
            "queryset .all()",
            "get_object_or_404()",
            "queryset .get(…=…)",
            "queryset .count()",
            "model .save()",
        ]
    )


def test_the_check_leaves_dicts_lists_and_routers_alone(tmp_path):
    found = _sites_in(
        tmp_path,
        "    request.GET.get('period', '24h')\n"
        "    {'a': 1}.values()\n"
        "    [1, 2].count(1)\n"
        "    router.delete('/agents/{agent_id}')\n",
    )
    assert found == []
