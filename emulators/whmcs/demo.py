"""The WHMCS demo dataset, with ids other emulators' demo data refers to.

Seeded by `POST /__emulator__/seed {"dataset": "demo"}` into an empty emulator (or by
`fulfillment emulate whmcs --demo`); the ids below are then exactly as listed.

Clients (`clientid`, Salesforce `Account.WH_Account__c`):
    1  Taro Yamada       Active, one RemoteCreditCard pay method (a card Stripe holds, ending
                         4242: the common production case)
    2  Hanako Suzuki     Active, one BankAccount pay method (banktransfer)
    3  Ichiro Tanaka     Active, no pay method (the "missing payment method" case)
    4  Closed Kabushiki  Closed (AddOrder refuses it), one locally stored CreditCard

Products (`pid`, Salesforce `Product2.WHMCS_Product_Id__c`), prices in JPY per month:
    1  SIM Data 3GB         group 1 Mobile    990
    2  SIM Voice 10GB       group 1 Mobile   1980
    3  eSIM Data 20GB       group 1 Mobile   2480
    4  Fiber Internet 1G    group 2 Internet 4980
    5  VPN Basic            group 3 VPN       550

Product custom fields (`customfields` ids in AddOrder / GetClientsProducts):
    "Salesforce Order Item ID" on product N has field id N (1..5)
    "Phone Number" on SIM products 1, 2, 3 has field ids 6, 7, 8
    "EID" on the eSIM product 3 has field id 9

Gateways (AddOrder `paymentmethod`): banktransfer "Bank Transfer", stripe "Credit Card".
"""

from __future__ import annotations

from typing import Any, Final

CLIENT_WITH_CARD: Final = 1
CLIENT_WITH_BANK_ACCOUNT: Final = 2
CLIENT_WITHOUT_PAY_METHOD: Final = 3
CLIENT_CLOSED: Final = 4

PRODUCT_SIM_DATA_3GB: Final = 1
PRODUCT_SIM_VOICE_10GB: Final = 2
PRODUCT_ESIM_DATA_20GB: Final = 3
PRODUCT_FIBER_INTERNET: Final = 4
PRODUCT_VPN_BASIC: Final = 5

ORDER_ITEM_FIELD_NAME: Final = "Salesforce Order Item ID"
ORDER_ITEM_FIELD_IDS: Final = {pid: pid for pid in range(1, 6)}
PHONE_NUMBER_FIELD_IDS: Final = {1: 6, 2: 7, 3: 8}
EID_FIELD_ID: Final = 9

GATEWAYS: Final = [
    {"module": "banktransfer", "displayname": "Bank Transfer"},
    {"module": "stripe", "displayname": "Credit Card"},
]

GROUPS: Final = {1: "Mobile", 2: "Internet", 3: "VPN"}

# Custom fields are listed per product; ids are assigned in this order, 1..9, as documented.
PRODUCTS: Final[list[dict[str, Any]]] = [
    {"name": "SIM Data 3GB", "gid": 1, "monthly": "990.00", "fields": [ORDER_ITEM_FIELD_NAME]},
    {"name": "SIM Voice 10GB", "gid": 1, "monthly": "1980.00", "fields": [ORDER_ITEM_FIELD_NAME]},
    {"name": "eSIM Data 20GB", "gid": 1, "monthly": "2480.00", "fields": [ORDER_ITEM_FIELD_NAME]},
    {
        "name": "Fiber Internet 1G",
        "gid": 2,
        "monthly": "4980.00",
        "fields": [ORDER_ITEM_FIELD_NAME],
    },
    {"name": "VPN Basic", "gid": 3, "monthly": "550.00", "fields": [ORDER_ITEM_FIELD_NAME]},
]
EXTRA_FIELDS: Final = [(1, "Phone Number"), (2, "Phone Number"), (3, "Phone Number"), (3, "EID")]

CLIENTS: Final[list[dict[str, Any]]] = [
    {"firstname": "Taro", "lastname": "Yamada", "email": "taro.yamada@example.jp"},
    {"firstname": "Hanako", "lastname": "Suzuki", "email": "hanako.suzuki@example.jp"},
    {"firstname": "Ichiro", "lastname": "Tanaka", "email": "ichiro.tanaka@example.jp"},
    {
        "firstname": "Closed",
        "lastname": "Kabushiki",
        "email": "closed@example.jp",
        "companyname": "Closed Kabushiki Kaisha",
        "status": "Closed",
    },
]

PAY_METHODS: Final[list[dict[str, Any]]] = [
    {
        "clientid": 1,
        "type": "RemoteCreditCard",
        "gateway": "stripe",
        "last_four": "4242",
        "expiry": "1230",
    },
    {"clientid": 2, "type": "BankAccount", "gateway": "banktransfer", "bank_name": "Mizuho"},
    {
        "clientid": 4,
        "type": "CreditCard",
        "gateway": "stripe",
        "last_four": "1111",
        "expiry": "0129",
    },
]
