"""Nothing but notifier.services.transitions writes `Delivery.status` or delivery event rows.

A scan of the source (AST, no database): every way this codebase writes rows is looked for
outside the writer module, with the model resolved from the expression where it can be (so a
campaign's or a step's `.update(status=...)` is not mistaken for a delivery's). The scanner is
tested on snippets that do each forbidden thing, so a scan that finds nothing means something.
"""

from __future__ import annotations

import ast
import re
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from notifier.status import DeliveryStatus

ROOT = Path(__file__).resolve().parent.parent
SCANNED = ("notifier", "channels", "campaigns", "notifier_site")
WRITER = "notifier/services/transitions.py"
EXEMPT = {
    # The naive baseline `manage.py bench` measures the pipeline against: a row at a time
    # through the ORM, on purpose, in bench workers only.
    "notifier_site/benchmarks.py",
}
# `.status = ...` outside the writer that is not a model's: (file, function) -> why.
IN_MEMORY_STATUS = {
    ("notifier/services/deliveries.py", "_record"): (
        "the outcome on the in-memory Claimed record, which deliveries_set writes"
    ),
}

MANAGERS = {"objects", "_default_manager", "_base_manager"}
CREATORS = {"create", "bulk_create", "get_or_create", "update_or_create"}
ROW_WRITERS = {"insert_rows", "copy_rows", "update_rows"}
STATUS_VALUES = set(DeliveryStatus.values)
# An UPDATE whose SET (before WHERE or FROM) assigns status; group 1 is the table.
SQL_UPDATE_STATUS = re.compile(
    r"\bUPDATE\s+(\S+)(?:\s+AS\s+\w+)?\s+SET\b(?:(?!\bWHERE\b|\bFROM\b).)*?\bstatus\s*=",
    re.IGNORECASE | re.DOTALL,
)
SQL_INSERT_EVENT = re.compile(
    r"\bINSERT\s+INTO\s+\S*(?:deliveryevent|delivery_event|\{events?\})", re.IGNORECASE
)


@dataclass(frozen=True)
class Finding:
    path: str
    line: int
    what: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.what}"


def _model_of(node: ast.expr) -> str | None:
    """The model a queryset expression starts from (`Delivery.objects.filter(...)` ->
    "Delivery"), or None when it starts from a variable or a related manager."""
    while True:
        if isinstance(node, ast.Call):
            node = node.func
        elif isinstance(node, ast.Attribute):
            if node.attr in MANAGERS and isinstance(node.value, ast.Name):
                return node.value.id
            node = node.value
        elif isinstance(node, ast.Subscript):
            node = node.value
        else:
            return None


def _sql_text(node: ast.expr) -> str | None:
    """A string literal's text; an f-string's, its placeholders as `{expression}`."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr):
        return "".join(
            part.value
            if isinstance(part, ast.Constant) and isinstance(part.value, str)
            else "{" + ast.unparse(part.value) + "}"
            if isinstance(part, ast.FormattedValue)
            else ""
            for part in node.values
        )
    return None


def _strings(node: ast.expr) -> list[str] | None:
    """The strings of a list/tuple literal of strings, or None when it is not one."""
    if isinstance(node, (ast.List, ast.Tuple, ast.Set)):
        found = [e.value for e in node.elts if isinstance(e, ast.Constant)]
        return [s for s in found if isinstance(s, str)]
    return None


class Scanner(ast.NodeVisitor):
    def __init__(self, path: str) -> None:
        self.path = path
        self.findings: list[Finding] = []
        self.status_names = {"DeliveryStatus"}  # and its aliases in this module (S = ...)
        self.function = ""

    def flag(self, node: ast.AST, what: str) -> None:
        self.findings.append(Finding(self.path, getattr(node, "lineno", 0), what))

    def visit_Module(self, node: ast.Module) -> None:
        for statement in ast.walk(node):
            if isinstance(statement, ast.ImportFrom):
                for alias in statement.names:
                    if alias.name == "DeliveryStatus" and alias.asname:
                        self.status_names.add(alias.asname)
        for statement in node.body:
            if (
                isinstance(statement, ast.Assign)
                and isinstance(statement.value, ast.Name)
                and statement.value.id in self.status_names
            ):
                self.status_names |= {t.id for t in statement.targets if isinstance(t, ast.Name)}
        self.generic_visit(node)

    def visit_FunctionDef(self, node: ast.FunctionDef | ast.AsyncFunctionDef) -> None:
        outer, self.function = self.function, node.name
        self.generic_visit(node)
        self.function = outer

    visit_AsyncFunctionDef = visit_FunctionDef

    def _delivery_status(self, value: ast.expr) -> bool:
        """Whether a value written as a status is a delivery's (S.SENT, "sent", ...)."""
        if isinstance(value, ast.Attribute) and isinstance(value.value, ast.Name):
            return value.value.id in self.status_names
        if isinstance(value, ast.Constant):
            return value.value in STATUS_VALUES
        return False

    def visit_Call(self, node: ast.Call) -> None:
        func = node.func
        name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
        receiver = func.value if isinstance(func, ast.Attribute) else None
        model = _model_of(receiver) if receiver is not None else None
        if name in ("Delivery", "DeliveryEvent") and isinstance(func, ast.Name):
            self.flag(node, f"builds a {name} row")
        elif name in CREATORS and model in ("Delivery", "DeliveryEvent"):
            self.flag(node, f"{model}.objects.{name}()")
        elif name == "update" and receiver is not None:
            self._update(node, model)
        elif name == "bulk_update" and model in (None, "Delivery"):
            fields = node.args[1] if len(node.args) > 1 else _keyword(node, "fields")
            if fields is not None and "status" in (_strings(fields) or ["status"]):
                self.flag(node, "bulk_update() of status")
        elif name in ROW_WRITERS and node.args and isinstance(node.args[0], ast.Name):
            table = node.args[0].id
            names = _strings(node.args[1]) if len(node.args) > 1 else None
            if table == "DeliveryEvent" or (
                table == "Delivery"
                and (name != "update_rows" or names is None or "status" in names)
            ):
                self.flag(node, f"{name}({table}, ...)")
        elif name == "save" and receiver is not None:
            fields = _keyword(node, "update_fields")
            listed = _strings(fields) if fields is not None else None
            target = ast.unparse(receiver).lower()
            if (listed is not None and "status" in listed and "campaign" not in target) or (
                fields is None and "deliver" in target
            ):
                self.flag(node, f"{ast.unparse(receiver)}.save() writes a status")
        self.generic_visit(node)

    def _update(self, node: ast.Call, model: str | None) -> None:
        if model is not None and model != "Delivery":
            return
        for keyword in node.keywords:
            if keyword.arg == "status" and (
                model == "Delivery" or self._delivery_status(keyword.value)
            ):
                self.flag(node, ".update(status=...) of deliveries")
            elif keyword.arg is None:  # **something
                spread = keyword.value
                if isinstance(spread, ast.Dict):
                    keys = [k.value for k in spread.keys if isinstance(k, ast.Constant)]
                    if "status" in keys and (model == "Delivery" or model is None):
                        self.flag(node, ".update(**{'status': ...})")
                elif model == "Delivery":
                    self.flag(node, "Delivery .update(**...) that may hold a status")

    def visit_Assign(self, node: ast.Assign) -> None:
        targets = [
            t
            for target in node.targets
            for t in (target.elts if isinstance(target, ast.Tuple) else [target])
        ]
        for target in targets:
            if (
                isinstance(target, ast.Attribute)
                and target.attr == "status"
                and (self.path, self.function) not in IN_MEMORY_STATUS
                and not _other_owner(target.value)
            ):
                self.flag(node, f"assigns {ast.unparse(target)}")
        self.generic_visit(node)

    def _sql(self, node: ast.expr) -> None:
        text = _sql_text(node)
        if text is None:
            return
        for match in SQL_UPDATE_STATUS.finditer(text):
            table = match.group(1)
            if "{" in table or "deliver" in table.lower():
                self.flag(node, f"SQL UPDATE {table} ... SET status")
        if SQL_INSERT_EVENT.search(text):
            self.flag(node, "SQL INSERT INTO the delivery events")

    def visit_Constant(self, node: ast.Constant) -> None:
        self._sql(node)

    def visit_JoinedStr(self, node: ast.JoinedStr) -> None:
        self._sql(node)  # not its parts: they are not whole statements


def _other_owner(node: ast.expr) -> bool:
    """An object whose `.status` is not a delivery's: a campaign, a step, or an object setting
    its own (an exception, a response: the models here never assign their own status)."""
    owner = ast.unparse(node).lower()
    return owner == "self" or "campaign" in owner or "step" in owner


def _keyword(node: ast.Call, name: str) -> ast.expr | None:
    return next((k.value for k in node.keywords if k.arg == name), None)


def scan(source: str, path: str) -> list[Finding]:
    scanner = Scanner(path)
    scanner.visit(ast.parse(source))
    return scanner.findings


def sources() -> Iterator[tuple[str, str]]:
    for package in SCANNED:
        for file in sorted((ROOT / package).rglob("*.py")):
            path = file.relative_to(ROOT).as_posix()
            if "/migrations/" in path or path == WRITER or path in EXEMPT:
                continue
            yield path, file.read_text(encoding="utf-8")


def test_nothing_but_the_writer_writes_delivery_statuses_or_events() -> None:
    findings = [finding for path, text in sources() for finding in scan(text, path)]
    assert not findings, "write these through notifier.services.transitions:\n" + "\n".join(
        map(str, findings)
    )


def test_the_writer_itself_is_what_the_scan_would_flag() -> None:
    """The writer module does each thing the scan forbids elsewhere: the scan can see them."""
    text = (ROOT / WRITER).read_text(encoding="utf-8")
    found = {f.what for f in scan(text, "elsewhere.py")}
    assert any("SQL UPDATE" in what for what in found), found
    assert any("update(status" in what or "update(**" in what for what in found), found
    assert any("DeliveryEvent" in what for what in found), found


def test_each_in_memory_exception_still_assigns_a_status() -> None:
    """An exception that no longer matches anything is removed, not left to hide a write."""
    for path, function in IN_MEMORY_STATUS:
        tree = ast.parse((ROOT / path).read_text(encoding="utf-8"))
        bodies = [
            n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef) and n.name == function
        ]
        assigned = [
            n
            for body in bodies
            for n in ast.walk(body)
            if isinstance(n, ast.Assign)
            and any(
                isinstance(t, ast.Attribute) and t.attr == "status"
                for target in n.targets
                for t in (target.elts if isinstance(target, ast.Tuple) else [target])
            )
        ]
        assert assigned, f"{path}:{function} no longer assigns .status"


BAD = textwrap.dedent(
    """
    from notifier.status import DeliveryStatus
    S = DeliveryStatus

    def bad(ids, queued, delivery, rows, events):
        Delivery.objects.filter(pk__in=ids).update(status=S.SENT)
        queued.update(status=S.HELD, reason="x")
        queued.filter(reason="").update(status="cancelled")
        Delivery.objects.filter(pk=1).update(**{"status": S.FAILED})
        Delivery.objects.filter(pk=1).update(**fields)
        Delivery.objects.bulk_update(rows, ["status", "reason"])
        update_rows(Delivery, ("status", "reason"), rows, where={"status": S.HELD})
        insert_rows(Delivery, ("message", "status"), rows)
        copy_rows(DeliveryEvent, ("delivery", "at"), events)
        insert_rows(DeliveryEvent, ("delivery", "at"), events)
        DeliveryEvent.objects.create(delivery_id=1, status=S.SENT)
        DeliveryEvent.objects.bulk_create([DeliveryEvent(delivery_id=1)])
        Delivery.objects.create(status=S.QUEUED)
        delivery.status = S.SENT
        delivery.save()
        delivery.save(update_fields=["status"])
        cursor.execute(f"UPDATE {table} SET attempts = 1, status = %s WHERE id = %s", [S.SENT])
        cursor.execute("UPDATE notifier_delivery SET status = 'sent'")
        cursor.execute(f"INSERT INTO {events} (delivery_id, at) SELECT id, now() FROM moved")
    """
)

GOOD = textwrap.dedent(
    """
    from notifier.status import DeliveryStatus
    S = DeliveryStatus

    def good(campaign, step, ids, table):
        Campaign.objects.filter(pk=1).update(status=C.DONE, finished_at=now)
        CampaignStep.objects.filter(pk=1).update(status=StepStatus.SKIPPED)
        campaign.steps.filter(status=StepStatus.PENDING).update(status=StepStatus.CANCELLED)
        Delivery.objects.filter(pk__in=ids, status=S.QUEUED).update(next_attempt_at=now)
        Delivery.objects.filter(pk=1).update(**{stamp: Coalesce(stamp, at)})
        Recipient.objects.bulk_update(rows, ["phone"])
        update_rows(Message, ("routed_at",), rows)
        insert_rows(InboxItem, ("user", "delivery"), rows)
        campaign.status = C.RUNNING
        campaign.save(update_fields=["status"])
        cursor.execute(f"UPDATE {table} SET claimed_until = %s WHERE status = %s", [1, S.SENDING])
        cursor.execute("UPDATE campaigns_campaign SET status = 'done'")
        cursor.execute(f"SELECT 1 FROM {delivery} AS d WHERE d.status = ANY(%s)", [[S.HELD]])
    """
)


def test_the_scan_flags_every_kind_of_write_in_a_bad_snippet() -> None:
    findings = scan(BAD, "bad.py")
    lines = {f.line for f in findings}
    first = BAD.splitlines().index("def bad(ids, queued, delivery, rows, events):") + 1
    body = range(first + 1, len(BAD.splitlines()) + 1)
    missed = [
        BAD.splitlines()[n - 1].strip()
        for n in body
        if BAD.splitlines()[n - 1].strip() and n not in lines
    ]
    assert not missed, "the scan missed:\n" + "\n".join(missed)


def test_the_scan_leaves_other_models_and_reads_alone() -> None:
    assert scan(GOOD, "good.py") == []


def test_an_in_memory_exception_is_only_for_its_own_function() -> None:
    source = "def _other(delivery):\n    delivery.status = S.SENT\n"
    assert scan(source, "notifier/services/deliveries.py")
    assert not scan(source.replace("_other", "_record"), "notifier/services/deliveries.py")
