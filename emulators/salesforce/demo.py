"""The Salesforce demo dataset: a catalog, price books, accounts and draft orders in one call.

Accounts point at the WHMCS emulator's demo clients through `WH_Account__c`, products at its demo
products through `WHMCS_Product_Id__c`. Those numbers are repeated here from
`emulators/whmcs/demo.py` (clients 1-4, products 1-5) rather than imported, so this emulator
runs alone; keep the two in step.

    accounts  CUST-0001 Taro Yamada        WHMCS client 1 (credit card)
              CUST-0002 Hanako Suzuki      WHMCS client 2 (bank account)
              CUST-0003 Ichiro Tanaka      WHMCS client 3 (no payment method)
              CUST-0004 Closed Kabushiki   WHMCS client 4 (client Closed)
              CUST-0005 Unlinked Customer  no WHMCS client (BILLING_CLIENT_NOT_LINKED)
    products  SIM-DATA-3GB, SIM-VOICE-10GB, ESIM-DATA-20GB (SIM, Freebit plan codes),
              SIM-ACTIVATION (Onetime activation fee), FIBER-1G (Internet), VPN-BASIC (VPN),
              LEGACY-PHONE (no WHMCS_Product_Id__c: PRODUCT_NOT_MAPPED)
    orders    all Draft on the Portal price book: esim (eSIM with EID), physical_sim,
              internet, no_payment_method, unmapped_product. Salesforce inserts orders as
              Draft only; activate one with an update that changes its Status alone.

The activation fee has no WHMCS product of its own in the WHMCS demo, so no demo order uses it.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from emulators.salesforce import schema
from emulators.salesforce.auth import USER_ID
from emulators.salesforce.store import Store, Transaction

# (code, name, type, class, cycle, WHMCS pid, Freebit plan, monthly price in JPY)
PRODUCTS: list[tuple[str, str, str, str, str, int | None, str | None, float]] = [
    ("SIM-DATA-3GB", "SIM Data 3GB", "SIM", "Service", "Monthly", 1, "PASI_3G", 990.0),
    ("SIM-VOICE-10GB", "SIM Voice 10GB", "SIM", "Service", "Monthly", 2, "PASI_10G", 1980.0),
    ("ESIM-DATA-20GB", "eSIM Data 20GB", "SIM", "Service", "Monthly", 3, "PASI_20G", 2480.0),
    ("SIM-ACTIVATION", "SIM Activation Fee", "SIM", "Activation", "Onetime", None, None, 3300.0),
    ("FIBER-1G", "Fiber Internet 1G", "Internet", "Service", "Monthly", 4, None, 4980.0),
    ("VPN-BASIC", "VPN Basic", "VPN", "Service", "Monthly", 5, None, 550.0),
    ("LEGACY-PHONE", "Legacy Phone Plan", "Other", "Service", "Monthly", None, None, 1500.0),
]

# (customer number, name, WHMCS client id)
ACCOUNTS: list[tuple[str, str, str | None]] = [
    ("CUST-0001", "Taro Yamada", "1"),
    ("CUST-0002", "Hanako Suzuki", "2"),
    ("CUST-0003", "Ichiro Tanaka", "3"),
    ("CUST-0004", "Closed Kabushiki Kaisha", "4"),
    ("CUST-0005", "Unlinked Customer", None),
]

ESIM_EID = "89049032000001000000012345678901"
_ADDRESS = {
    "BillingStreet": "1-2-3 Shibuya",
    "BillingCity": "Shibuya-ku",
    "BillingState": "Tokyo",
    "BillingPostalCode": "150-0002",
    "BillingCountry": "Japan",
}
# (key, customer number, product code, extra order fields)
ORDERS: list[tuple[str, str, str, dict[str, Any]]] = [
    (
        "esim",
        "CUST-0001",
        "ESIM-DATA-20GB",
        {"SIM_Type__c": "eSIM", "EID__c": ESIM_EID, "SIM_Phone_Number__c": "07012345678"},
    ),
    (
        "physical_sim",
        "CUST-0002",
        "SIM-VOICE-10GB",
        {"SIM_Type__c": "Physical SIM", "SIM_Phone_Number__c": "08012345678"},
    ),
    ("internet", "CUST-0001", "FIBER-1G", {}),
    (
        "no_payment_method",
        "CUST-0003",
        "SIM-DATA-3GB",
        {"SIM_Type__c": "Physical SIM", "SIM_Phone_Number__c": "08087654321"},
    ),
    ("unmapped_product", "CUST-0001", "LEGACY-PHONE", {}),
]


def seed_demo(store: Store) -> dict[str, Any]:
    """Create the demo dataset; return the ids made, by kind and readable key."""
    tx = Transaction(USER_ID)
    standard_id = store.standard_pricebook()["Id"]
    portal = store.create(tx, schema.PRICEBOOK2, {"Name": "Portal", "IsActive": True})
    products: dict[str, str] = {}
    entries: dict[str, str] = {}
    for code, name, kind, item_class, cycle, pid, plan, price in PRODUCTS:
        product = store.create(
            tx,
            schema.PRODUCT2,
            {
                "Name": name,
                "ProductCode": code,
                "IsActive": True,
                "Product_Type__c": kind,
                "Item_Class__c": item_class,
                "Billing_Cycle__c": cycle,
                "WHMCS_Product_Id__c": pid,
                "Freebit_Plan_Code__c": plan,
            },
        )
        products[code] = product["Id"]
        # Salesforce wants the standard price before any custom one; orders use the portal's.
        for pricebook_id in (standard_id, portal["Id"]):
            entry = store.create(
                tx,
                schema.PRICEBOOK_ENTRY,
                {
                    "Pricebook2Id": pricebook_id,
                    "Product2Id": product["Id"],
                    "UnitPrice": price,
                    "IsActive": True,
                },
            )
            if pricebook_id == portal["Id"]:
                entries[code] = entry["Id"]
    accounts: dict[str, str] = {}
    for number, name, client in ACCOUNTS:
        account = store.create(
            tx,
            schema.ACCOUNT,
            {
                "Name": name,
                "Customer_Number__c": number,
                "WH_Account__c": client,
                "Portal_Status__c": "Active" if client else "Not Yet",
            },
        )
        accounts[number] = account["Id"]
    today = datetime.fromtimestamp(store.clock(), UTC).date().isoformat()
    orders: dict[str, str] = {}
    items: dict[str, str] = {}
    prices = {code: price for code, *_, price in PRODUCTS}
    for key, number, code, extra in ORDERS:
        order = store.create(
            tx,
            schema.ORDER,
            {
                "AccountId": accounts[number],
                "Pricebook2Id": portal["Id"],
                "Status": "Draft",
                "EffectiveDate": today,
                "Activation_Status__c": "Pending",
                **_ADDRESS,
                **extra,
            },
        )
        orders[key] = order["Id"]
        item = store.create(
            tx,
            schema.ORDER_ITEM,
            {
                "OrderId": order["Id"],
                "PricebookEntryId": entries[code],
                "Quantity": 1,
                "UnitPrice": prices[code],
            },
        )
        items[key] = item["Id"]
    return {
        "pricebooks": {"standard": standard_id, "portal": portal["Id"]},
        "products": products,
        "pricebook_entries": entries,
        "accounts": accounts,
        "orders": orders,
        "order_items": items,
    }
