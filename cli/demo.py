"""`fulfillment demo order`: an order made and activated in the dev stack's Salesforce through
its REST API, exactly as the portal would, then followed live until it is fulfilled or parked.

Nothing here starts a workflow: the CDC listener sees the activation and starts it, so the demo
shows the engine as it runs in production.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

import httpx
import requests
from simple_salesforce.api import Salesforce
from temporalio.service import RPCError

from clients.salesforce_auth import SalesforceAuth
from clients.soql import quote
from config.settings import Settings
from domain.fulfillment import FulfillmentProgress, FulfillmentStatus, workflow_id
from domain.messages import PROGRESS_QUERY
from temporal_connection.connection import connect_temporal

# The dev stack's demo data (emulators/salesforce/demo.py): customers and product codes.
PAYING_CUSTOMER = "CUST-0001"
NO_PAYMENT_CUSTOMER = "CUST-0003"
PRODUCTS = {None: "FIBER-1G", "esim": "ESIM-DATA-20GB", "physical": "SIM-VOICE-10GB"}
ADDRESS = {
    "BillingStreet": "1-2-3 Shibuya",
    "BillingCity": "Shibuya-ku",
    "BillingState": "Tokyo",
    "BillingPostalCode": "150-0002",
    "BillingCountry": "Japan",
}
Say = Callable[[str], None]
_ENDED = (FulfillmentStatus.ACTIVATED, FulfillmentStatus.CANCELLED)


@dataclass(frozen=True)
class DemoLinks:
    temporal_ui: str | None
    api: str | None
    freebit_control: str | None


@dataclass(frozen=True)
class DemoOutcome:
    sf_order_id: str
    status: FulfillmentStatus | None
    progress: FulfillmentProgress | None


async def demo_order(
    settings: Settings,
    links: DemoLinks,
    *,
    sim: str | None = None,
    no_payment_method: bool = False,
    fail_sim: bool = False,
    within: float = 120.0,
    say: Say = print,
) -> DemoOutcome:
    auth = SalesforceAuth.from_settings(settings)
    try:
        token = await auth.token()
    finally:
        await auth.aclose()
    session = requests.Session()
    sf = Salesforce(
        instance_url=token.instance_url,
        session_id=token.access_token.get_secret_value(),
        version=settings.sf_api_version,
        session=session,
    )
    eid = await _failing_eid(links) if fail_sim and sim == "esim" else None
    phone = (
        await _failing_account(links)
        if fail_sim and sim != "esim"
        else f"070{secrets.randbelow(10**8):08d}"
    )
    order_id = await asyncio.to_thread(
        _create_and_activate,
        sf,
        # Per request: requests lets REQUESTS_CA_BUNDLE override a session's `verify`.
        verify=str(settings.sf_ca_file) if settings.sf_ca_file else True,
        sim=sim,
        customer=NO_PAYMENT_CUSTOMER if no_payment_method else PAYING_CUSTOMER,
        phone=phone,
        eid=eid,
    )
    say(f"Order {order_id} created and activated in Salesforce (as the portal would).")
    wid = workflow_id(order_id)
    if links.temporal_ui:
        namespace = settings.temporal_namespace
        say(f"Temporal UI: {links.temporal_ui}/namespaces/{namespace}/workflows/{wid}")
    if links.api:
        say(f"API:         {links.api}/api/orders/{order_id}/fulfillment")
    progress = await _follow(settings, wid, within=within, say=say)
    status = progress.status if progress else None
    return DemoOutcome(order_id, status, progress)


def _create_and_activate(
    sf: Salesforce,
    *,
    verify: str | bool,
    sim: str | None,
    customer: str,
    phone: str,
    eid: str | None,
) -> str:
    account = sf.query(
        f"SELECT Id FROM Account WHERE Customer_Number__c = {quote(customer)} LIMIT 1",  # noqa: S608
        verify=verify,
    )["records"][0]["Id"]
    entry = sf.query(
        "SELECT Id, Pricebook2Id, UnitPrice FROM PricebookEntry"  # noqa: S608
        f" WHERE Product2.ProductCode = {quote(PRODUCTS[sim])} AND Pricebook2.Name = 'Portal'"
        " LIMIT 1",
        verify=verify,
    )["records"][0]
    fields: dict[str, Any] = {
        "AccountId": account,
        "Pricebook2Id": entry["Pricebook2Id"],
        "Status": "Draft",
        "EffectiveDate": date.today().isoformat(),
        **ADDRESS,
    }
    if sim is not None:
        fields |= {
            "SIM_Type__c": "eSIM" if sim == "esim" else "Physical SIM",
            "SIM_Phone_Number__c": phone,
        }
        if sim == "esim":
            fields["EID__c"] = eid or f"8904903200000{secrets.randbelow(10**19):019d}"
    created = sf.restful("sobjects/Order/", method="POST", json=fields, verify=verify)
    assert isinstance(created, dict)
    order = created["id"]
    item = {
        "OrderId": order,
        "PricebookEntryId": entry["Id"],
        "Quantity": 1,
        "UnitPrice": entry["UnitPrice"],
    }
    sf.restful("sobjects/OrderItem/", method="POST", json=item, verify=verify)
    # Activation changes Status alone, as Salesforce requires.
    sf.restful(
        f"sobjects/Order/{order}", method="PATCH", json={"Status": "Activated"}, verify=verify
    )
    return str(order)


async def _follow(
    settings: Settings, wid: str, *, within: float, say: Say
) -> FulfillmentProgress | None:
    client = await connect_temporal(settings)
    handle = client.get_workflow_handle(wid)
    seen: tuple[object, ...] = ()
    progress: FulfillmentProgress | None = None
    try:
        async with asyncio.timeout(within):
            while True:
                try:
                    progress = await handle.query(PROGRESS_QUERY, result_type=FulfillmentProgress)
                except RPCError:
                    progress = None  # the listener has not started it yet (or it just ended)
                if progress is not None:
                    state = (progress.status, progress.step, progress.waiting_for_operator)
                    if state != seen:
                        seen = state
                        say(_line(progress))
                    if progress.status in (
                        FulfillmentStatus.ACTIVATED,
                        FulfillmentStatus.CANCELLED,
                    ):
                        return progress
                    if progress.waiting_for_operator:
                        return progress
                await asyncio.sleep(0.3)
    except TimeoutError:
        say(f"Still not finished after {within:g} s; follow it in the Temporal UI.")
        return progress


def _line(progress: FulfillmentProgress) -> str:
    stamp = datetime.now(UTC).strftime("%H:%M:%S")
    step = progress.step.value if progress.step else "-"
    text = f"[{stamp}] {progress.status.value:<10} {step}"
    if progress.waiting_for_operator and progress.last_error:
        text += f"  parked: {progress.last_error.code.value}: {progress.last_error.summary()}"
    if progress.status is FulfillmentStatus.ACTIVATED:
        text += f"  WHMCS order {progress.whmcs_order_id}"
    return text


async def _failing_eid(links: DemoLinks) -> str:
    return str((await _freebit_config(links))["failing_eids"][0])


async def _failing_account(links: DemoLinks) -> str:
    return str((await _freebit_config(links))["failing_accounts"][0])


async def _freebit_config(links: DemoLinks) -> dict[str, Any]:
    if not links.freebit_control:
        raise RuntimeError("--fail-sim needs the Freebit emulator of the dev stack")
    async with httpx.AsyncClient(timeout=5) as http:
        reply = await http.get(f"{links.freebit_control}/config")
        reply.raise_for_status()
        config: dict[str, Any] = reply.json()
    return config
