"""The generated parts of `docs/setup-upstreams.md`, read from the code so they cannot drift.

    .venv/bin/python -m docs_gen.upstreams            # print every generated block
    .venv/bin/python -m docs_gen.upstreams --write    # rewrite them in docs/setup-upstreams.md

Each block sits in the page between `<!-- generated: NAME -->` and `<!-- end generated -->`;
the prose around them is written by hand. `tests/unit/docs/test_setup_upstreams.py` fails while
the committed page differs from what this produces.

Where each block comes from:

- `salesforce-fields`: every custom field (`…__c`) named in a string of the engine's code
  (docstrings apart), with its type and label from the Salesforce emulator's schema
  (`emulators/salesforce/schema.py`, which models the org the engine expects). A field is
  "written" when the engine's code uses it as a key of a dict it builds (the write-backs).
  Reading the emulator's schema is fine here, in a dev-time generator; the engine itself
  imports nothing of `emulators/`.
- `salesforce-channels`: the defaults of `CDC_CHANNELS`, `SF_TRIGGER_STATUS`,
  `SF_API_VERSION`, `SF_CLIENT_NAME` in `config/settings.py`.
- `whmcs-actions`: the actions `clients/whmcs.py` sends, and which of them write.
- `whmcs-marker`: the name of the WHMCS product custom field that carries our marker.
- `freebit-endpoints`: the paths `clients/freebit.py` posts to.
- `demo-catalogue`: the demo data's product mapping (`emulators/salesforce/demo.py`), as an
  example of what the Product2 fields must hold.
"""

from __future__ import annotations

import ast
import re
import sys
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PAGE = ROOT / "docs" / "setup-upstreams.md"

# The engine's packages: what runs in production. Emulators, the dev stack, the CLI's own code,
# tests and benchmarks are left out: a field only they name is not one the org must have.
ENGINE_PACKAGES = (
    "domain",
    "workflows",
    "activities",
    "workers",
    "clients",
    "cdc_listener",
    "config",
    "api",
    "usecases",
    "temporal_connection",
)

_CUSTOM = re.compile(r"\b[A-Za-z][A-Za-z0-9_]*?__c\b")
_BEGIN = re.compile(r"<!-- generated: ([a-z-]+) -->\n")
_END = "<!-- end generated -->"


# ---- reading the code -----------------------------------------------------------------------


def _engine_modules() -> Iterator[Path]:
    for package in ENGINE_PACKAGES:
        folder = ROOT / package
        if folder.is_dir():
            yield from sorted(folder.rglob("*.py"))


def _docstrings(tree: ast.AST) -> set[int]:
    ids: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                ids.add(id(body[0].value))
    return ids


def _written_keys(tree: ast.AST) -> Iterator[str]:
    for node in ast.walk(tree):
        if isinstance(node, ast.Dict):
            for key in node.keys:
                if isinstance(key, ast.Constant) and isinstance(key.value, str):
                    yield key.value
        elif (
            isinstance(node, ast.Subscript)
            and isinstance(node.ctx, ast.Store)
            and isinstance(node.slice, ast.Constant)
            and isinstance(node.slice.value, str)
        ):
            yield node.slice.value


def engine_custom_fields() -> tuple[set[str], set[str]]:
    """(every custom field the engine's code names, those it writes)."""
    named: set[str] = set()
    written: set[str] = set()
    for path in _engine_modules():
        tree = ast.parse(path.read_text(), str(path))
        skip = _docstrings(tree)
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Constant)
                and isinstance(node.value, str)
                and id(node) not in skip
            ):
                named.update(_CUSTOM.findall(node.value))
        written.update(key for key in _written_keys(tree) if _CUSTOM.fullmatch(key))
    return named, written


def _string_calls(path: Path, methods: set[str]) -> list[str]:
    """The first argument of every call of `self.<method>(…)` that is a string literal."""
    found: list[str] = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr in methods
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            found.append(node.args[0].value)
    return found


# ---- the blocks -----------------------------------------------------------------------------


def _type_text(field: object) -> str:
    from emulators.salesforce.schema import Field, FieldType

    assert isinstance(field, Field)
    kind = field.type
    if kind is FieldType.STRING:
        return f"Text({field.length})"
    if kind is FieldType.TEXTAREA:
        return f"Long Text Area({field.length})"
    if kind is FieldType.PICKLIST:
        values = ", ".join(f"`{v}`" for v in field.picklist)
        rule = "restricted " if field.restricted else ""
        return f"Picklist ({rule}{values})"
    names = {
        FieldType.DOUBLE: "Number(18, 0)",
        FieldType.CURRENCY: "Currency",
        FieldType.DATE: "Date",
        FieldType.DATETIME: "Date/Time",
        FieldType.BOOLEAN: "Checkbox",
        FieldType.REFERENCE: f"Lookup({field.reference_to})",
        FieldType.ID: "Id",
    }
    return names[kind]


def salesforce_fields() -> str:
    from emulators.salesforce.schema import OBJECTS

    named, written = engine_custom_fields()
    rows: list[str] = []
    placed: set[str] = set()
    for sobject in OBJECTS.values():
        for field in sobject.fields:
            if field.name not in named:
                continue
            placed.add(field.name)
            use = "reads, writes" if field.name in written else "reads"
            external = ", External ID" if field.external_id else ""
            rows.append(
                f"| {sobject.name} | `{field.name}` | {field.label} | "
                f"{_type_text(field)}{external} | {use} |"
            )
    for name in sorted(named - placed):
        rows.append(f"| ? | `{name}` | — | not in the emulator's schema | ? |")
    return "\n".join(
        [
            "| object | field (API name) | label | type | the engine |",
            "| --- | --- | --- | --- | --- |",
            *rows,
        ]
    )


def unplaced_fields() -> set[str]:
    """Custom fields the engine names that the emulator's schema does not define."""
    from emulators.salesforce.schema import OBJECTS

    named, _ = engine_custom_fields()
    return named - {f.name for o in OBJECTS.values() for f in o.fields}


def salesforce_channels() -> str:
    from config.settings import Settings

    fields = Settings.model_fields
    channels = [c.strip() for c in str(fields["cdc_channels"].default).split(",") if c.strip()]
    lines = ["| channel (CometD) / topic (Pub/Sub API) | what it is | enable in the org |"]
    lines.append("| --- | --- | --- |")
    for channel in channels:
        entity = channel.rsplit("/", 1)[-1]
        if channel.startswith("/data/") and entity.endswith("ChangeEvent"):
            sobject = entity.removesuffix("ChangeEvent")
            what = f"change events of {sobject}"
            enable = f"Change Data Capture: select `{sobject}`"
        else:
            what = f"platform event `{entity}`"
            enable = f"define the platform event `{entity}`"
        lines.append(f"| `{channel}` | {what} | {enable} |")
    lines.append("")
    lines.append(f"- `SF_TRIGGER_STATUS`: `{fields['sf_trigger_status'].default}`")
    lines.append(f"- `SF_API_VERSION`: `{fields['sf_api_version'].default}`")
    lines.append(f"- `SF_CLIENT_NAME`: `{fields['sf_client_name'].default}`")
    return "\n".join(lines)


def whmcs_actions() -> str:
    from clients import whmcs

    path = ROOT / "clients" / "whmcs.py"
    actions = sorted(set(_string_calls(path, {"_read", "_write", "_paged", "_settle"})))
    lines = ["| API action | writes |", "| --- | --- |"]
    for action in actions:
        lines.append(f"| `{action}` | {'yes' if action in whmcs.WRITE_ACTIONS else 'no'} |")
    return "\n".join(lines)


def whmcs_marker() -> str:
    from domain.billing import ORDER_ITEM_MARKER_FIELD

    return f"Custom field name (exactly): **`{ORDER_ITEM_MARKER_FIELD}`**"


def freebit_endpoints() -> str:
    path = ROOT / "clients" / "freebit.py"
    tree = ast.parse(path.read_text(), str(path))
    shape = re.compile(r"^[A-Za-z]+(/[A-Za-z]+)*/$")
    paths = sorted(
        {
            node.value
            for node in ast.walk(tree)
            if isinstance(node, ast.Constant)
            and isinstance(node.value, str)
            and shape.fullmatch(node.value)
        }
    )
    return "\n".join(f"- `<FREEBIT_BASE_URL>{p}`" for p in paths)


def demo_catalogue() -> str:
    from emulators.salesforce.demo import PRODUCTS

    lines = [
        "| `ProductCode` | `Product_Type__c` | `Item_Class__c` | `Billing_Cycle__c` "
        "| `WHMCS_Product_Id__c` | `Freebit_Plan_Code__c` |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for code, _name, kind, item_class, cycle, pid, plan, _price in PRODUCTS:
        lines.append(
            f"| `{code}` | {kind} | {item_class} | {cycle} | {pid if pid is not None else '—'} "
            f"| {f'`{plan}`' if plan else '—'} |"
        )
    return "\n".join(lines)


BLOCKS = {
    "salesforce-fields": salesforce_fields,
    "salesforce-channels": salesforce_channels,
    "whmcs-actions": whmcs_actions,
    "whmcs-marker": whmcs_marker,
    "freebit-endpoints": freebit_endpoints,
    "demo-catalogue": demo_catalogue,
}


def regenerate(page: str) -> str:
    """`page` with every generated block replaced by what the code says now."""
    out: list[str] = []
    position = 0
    for match in _BEGIN.finditer(page):
        if match.start() < position:
            continue
        name = match.group(1)
        end = page.find(_END, match.end())
        if end < 0:
            raise ValueError(f"generated block {name!r} has no {_END}")
        if name not in BLOCKS:
            raise ValueError(f"unknown generated block {name!r}")
        out.append(page[position : match.end()])
        out.append(BLOCKS[name]() + "\n")
        position = end
    out.append(page[position:])
    return "".join(out)


def main(argv: list[str]) -> int:
    if "--write" in argv:
        PAGE.write_text(regenerate(PAGE.read_text()))
        return 0
    for name, block in BLOCKS.items():
        print(f"<!-- generated: {name} -->\n{block()}\n{_END}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
