"""The dev stack as the end-to-end scenarios see it: one `fulfillment dev` process, reached only
through its outer doors — Salesforce REST on the emulator (JWT sign-in with what stack.env gives
the engine), the WHMCS API, the emulators' control APIs (to arrange a fault, or to read what an
upstream holds), the HTTP API with stack.json's tokens, the Temporal client with the stack's
payload key, and the `fulfillment` console script run as a process.

The dev-stack process, the Salesforce sign-in and SOQL come from test_dev_stack.py, imported: one
definition of how a test talks to the stack. Nothing here reaches into Postgres, Redis or an
engine module's internals; the demo's customers and products are named by `cli.demo`, whose
demo data the stack seeds.
"""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date
from typing import Any
from urllib.parse import urlsplit

import httpx
from temporalio.api.enums.v1 import EventType
from temporalio.service import RPCError, RPCStatusCode

from cli.demo import ADDRESS, PAYING_CUSTOMER
from clients.soql import quote
from devstack.stack_file import stack_env
from domain.fulfillment import (
    FulfillmentInput,
    FulfillmentProgress,
    FulfillmentResult,
    workflow_id,
)
from domain.messages import PROGRESS_QUERY
from temporal_connection.connection import connect_temporal
from tests.e2e.test_dev_stack import (
    DevRun,
    fulfillment_starts,
    salesforce,
    soql,
    stack_settings,
)
from workflows.order_fulfillment import OrderFulfillment

ORDER_FIELDS = (
    "Id, Status, Activation_Status__c, Activation_Error_Code__c, Activation_Error_Message__c,"
    " WHMCS_Order_ID__c, SIM_Type__c, SIM_Phone_Number__c, EID__c"
)
_DEMO_ORDER_LINE = re.compile(r"^Order (\w{18}) created and activated in Salesforce", re.M)

SalesforceSession = tuple[httpx.Client, str]


@dataclass(frozen=True)
class Ran:
    """A `fulfillment` command that ran to its end."""

    code: int
    out: str
    err: str

    def demo_order_id(self) -> str:
        found = _DEMO_ORDER_LINE.search(self.out)
        assert found, f"the demo named no order:\n{self}"
        return found.group(1)

    def __str__(self) -> str:
        return f"exit {self.code}\n--- stdout ---\n{self.out}\n--- stderr ---\n{self.err}"


class Stack:
    """One running `fulfillment dev` and the doors a user of it has."""

    def __init__(self, run: DevRun, data: dict[str, Any]) -> None:
        self.run = run
        self.data = data
        self.dev_dir = run.dev_dir
        self.stack_file = run.dev_dir / "stack.json"
        self.settings = stack_settings(run.dev_dir)
        self.http = httpx.Client(trust_env=False, timeout=15)

    def close(self) -> None:
        self.http.close()

    # -- processes -----------------------------------------------------------------------------

    def fulfillment(self, *args: str, timeout: float = 150) -> Ran:
        """`fulfillment ARGS…` as a process with the environment `. .dev/stack.env` gives a
        shell, run in the state directory (so no `.env` of the repository mixes in)."""
        done = subprocess.run(
            [sys.executable, "-m", "cli", *args],
            cwd=self.dev_dir,
            env=os.environ | stack_env(self.data),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        return Ran(done.returncode, done.stdout, done.stderr)

    def demo(self, *flags: str) -> Ran:
        return self.fulfillment("demo", "order", *flags, "--stack", str(self.stack_file))

    def child_pid(self, name: str) -> int:
        return self.run.named_children()[name]

    def console_has(self, text: str, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while text not in self.run.text():
            if time.monotonic() > deadline:
                return False
            time.sleep(0.1)
        return True

    # -- Salesforce ----------------------------------------------------------------------------

    @contextmanager
    def salesforce(self) -> Iterator[SalesforceSession]:
        with salesforce(self.dev_dir) as session:
            yield session

    def order(self, order_id: str, session: SalesforceSession | None = None) -> dict[str, Any]:
        query = f"SELECT {ORDER_FIELDS} FROM Order WHERE Id = {quote(order_id)}"  # noqa: S608
        if session is None:
            with self.salesforce() as (http, base):
                (record,) = soql(http, base, query)
        else:
            (record,) = soql(*session, query)
        return record

    def order_items(self, order_id: str) -> list[dict[str, Any]]:
        query = (
            "SELECT Id, WHMCS_Service_ID__c FROM OrderItem"  # noqa: S608
            f" WHERE OrderId = {quote(order_id)}"
        )
        with self.salesforce() as (http, base):
            return soql(http, base, query)

    def order_account(self, order_id: str) -> str:
        query = f"SELECT AccountId FROM Order WHERE Id = {quote(order_id)}"  # noqa: S608
        with self.salesforce() as (http, base):
            (record,) = soql(http, base, query)
        account: str = record["AccountId"]
        return account

    def activation_becomes(self, order_id: str, wanted: str, timeout: float) -> dict[str, Any]:
        """The order as Salesforce shows it once `Activation_Status__c` is `wanted`, or at the
        deadline: what a portal developer watching the record sees."""
        deadline = time.monotonic() + timeout
        with self.salesforce() as session:
            while True:
                record = self.order(order_id, session)
                if record["Activation_Status__c"] == wanted or time.monotonic() > deadline:
                    return record
                time.sleep(0.25)

    def create_order(
        self,
        product_code: str,
        fields: dict[str, Any] | None = None,
        *,
        customer: str = PAYING_CUSTOMER,
        activate: bool = True,
    ) -> str:
        """An order with one item of `product_code` on the Portal price book, made as the
        portal makes it: a Draft order, its item, then `Status` alone changed to Activated."""
        with self.salesforce() as (http, base):
            (account,) = soql(
                http,
                base,
                f"SELECT Id FROM Account WHERE Customer_Number__c = {quote(customer)}",  # noqa: S608
            )
            (entry,) = soql(
                http,
                base,
                "SELECT Id, Pricebook2Id, UnitPrice FROM PricebookEntry"  # noqa: S608
                f" WHERE Product2.ProductCode = {quote(product_code)}"
                " AND Pricebook2.Name = 'Portal'",
            )
            order = {
                "AccountId": account["Id"],
                "Pricebook2Id": entry["Pricebook2Id"],
                "Status": "Draft",
                "EffectiveDate": date.today().isoformat(),
                **ADDRESS,
                **(fields or {}),
            }
            created = http.post(f"{base}/sobjects/Order/", json=order)
            assert created.status_code == 201, created.text
            order_id: str = created.json()["id"]
            item = {
                "OrderId": order_id,
                "PricebookEntryId": entry["Id"],
                "Quantity": 1,
                "UnitPrice": entry["UnitPrice"],
            }
            added = http.post(f"{base}/sobjects/OrderItem/", json=item)
            assert added.status_code == 201, added.text
        if activate:
            self.activate(order_id)
        return order_id

    def activate(self, order_id: str, session: SalesforceSession | None = None) -> None:
        if session is None:
            with self.salesforce() as opened:
                self.activate(order_id, opened)
            return
        http, base = session
        reply = http.patch(f"{base}/sobjects/Order/{order_id}", json={"Status": "Activated"})
        assert reply.status_code == 204, reply.text

    # -- WHMCS and Freebit ---------------------------------------------------------------------

    def whmcs(self, action: str, **params: Any) -> dict[str, Any]:
        whmcs = self.data["whmcs"]
        form = {
            "action": action,
            "identifier": whmcs["identifier"],
            "secret": whmcs["secret"],
            "responsetype": "json",
            **params,
        }
        reply = self.http.post(whmcs["api_url"], data=form)
        body: dict[str, Any] = reply.json()
        assert body.get("result") == "success", reply.text
        return body

    def whmcs_order(self, whmcs_order_id: int | str) -> dict[str, Any]:
        (order,) = self.whmcs("GetOrders", id=whmcs_order_id)["orders"]["order"]
        return order  # type: ignore[no-any-return]

    def whmcs_orders_of(self, order_id: str) -> set[int]:
        """Every WHMCS order holding a service marked with one of the Salesforce order's items:
        what billing has for the order, however many attempts went into it."""
        items = {item["Id"] for item in self.order_items(order_id)}
        services = self.whmcs("GetClientsProducts", limitnum=1000)["products"]["product"]
        return {
            int(service["orderid"])
            for service in services
            for field in service["customfields"]["customfield"]
            if field["name"] == "Salesforce Order Item ID" and field["value"] in items
        }

    def control(self, system: str) -> str:
        """The emulator's control API (`/__emulator__`) next to its public URL."""
        url = {"whmcs": self.data["whmcs"]["api_url"], "freebit": self.data["freebit"]["base_url"]}
        parts = urlsplit(url[system])
        return f"{parts.scheme}://{parts.netloc}/__emulator__"

    def freebit_line(self, phone_number: str) -> dict[str, Any] | None:
        state = self.http.get(f"{self.control('freebit')}/state").json()
        line: dict[str, Any] | None = state["accounts"].get(phone_number)
        return line

    # -- the HTTP API --------------------------------------------------------------------------

    def api_get(self, path: str) -> httpx.Response:
        """A portal read, with the service token."""
        token = self.data["api"]["service_token"]
        return self.http.get(
            f"{self.data['api']['url']}{path}", headers={"Authorization": f"Bearer {token}"}
        )

    def api_action(self, order_id: str, action: str, reason: str) -> httpx.Response:
        """An operator's retry or cancel, with the ops token and a name."""
        token = self.data["api"]["ops_token"]
        return self.http.post(
            f"{self.data['api']['url']}/api/ops/fulfillments/{order_id}/{action}",
            json={"reason": reason},
            headers={"Authorization": f"Bearer {token}", "X-Requested-By": "e2e-operator"},
        )

    # -- Temporal ------------------------------------------------------------------------------

    def runs(self, order_id: str) -> list[FulfillmentInput]:
        """The input of every run Temporal has under the order's workflow id."""
        return asyncio.run(fulfillment_starts(self.dev_dir, order_id))

    def result(self, order_id: str, timeout: float = 60) -> FulfillmentResult:
        """The fulfillment's result once its workflow ends (waiting for the listener to start
        it, when it has not yet)."""

        async def wait() -> FulfillmentResult:
            client = await connect_temporal(self.settings)
            handle = client.get_workflow_handle_for(OrderFulfillment.run, workflow_id(order_id))
            async with asyncio.timeout(timeout):
                while True:
                    try:
                        return await handle.result()
                    except RPCError as error:
                        if error.status is not RPCStatusCode.NOT_FOUND:
                            raise
                    await asyncio.sleep(0.1)

        return asyncio.run(wait())

    def parked_at_attempt(self, order_id: str) -> int | None:
        """The attempt the fulfillment waits for an operator at (None while it works), as the
        workflow's `progress` query tells the Temporal UI."""

        async def ask() -> FulfillmentProgress:
            client = await connect_temporal(self.settings)
            handle = client.get_workflow_handle(workflow_id(order_id))
            return await handle.query(PROGRESS_QUERY, result_type=FulfillmentProgress)  # type: ignore[no-any-return]

        progress = asyncio.run(ask())
        return progress.attempt if progress.waiting_for_operator else None

    def history_reaches(
        self, order_id: str, condition: Callable[[list[EventType.ValueType]], bool], timeout: float
    ) -> list[EventType.ValueType]:
        """The event types of the order's workflow history once `condition` holds for them
        (an AssertionError at the deadline): where the workflow is, as the Temporal UI shows."""

        async def watch() -> list[EventType.ValueType]:
            client = await connect_temporal(self.settings)
            handle = client.get_workflow_handle(workflow_id(order_id))
            types: list[EventType.ValueType] = []
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                try:
                    history = await handle.fetch_history()
                except RPCError:
                    types = []  # the listener has not started it yet
                else:
                    types = [event.event_type for event in history.events]
                    if condition(types):
                        return types
                await asyncio.sleep(0.1)
            names = [EventType.Name(t) for t in types]
            raise AssertionError(f"the history never got there: {names}")

        return asyncio.run(watch())
