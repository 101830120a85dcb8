"""The mapping tables from each system's errors to the one taxonomy."""

from __future__ import annotations

import pytest

from clients.errors import BusinessError, ConfigurationError, ErrorCode, System, TransientError
from clients.freebit import FreebitAuthError, classify_freebit_reply
from clients.salesforce import classify_salesforce_error, classify_token_error
from clients.whmcs import classify_whmcs_error, classify_whmcs_status


@pytest.mark.parametrize(
    ("action", "message", "code"),
    [
        ("GetClientsDetails", "Client Not Found", ErrorCode.BILLING_CLIENT_NOT_LINKED),
        ("AddOrder", "Client ID Not Found", ErrorCode.BILLING_CLIENT_NOT_LINKED),
        (
            "AddOrder",
            "Invalid Payment Method. Valid options include stripe,banktransfer",
            ErrorCode.PAYMENT_METHOD_MISSING,
        ),
        (
            "AcceptOrder",
            "Order ID not found or Status not Pending",
            ErrorCode.BILLING_ORDER_REJECTED,
        ),
        (
            "CancelOrder",
            "Order ID not found or Status not Pending",
            ErrorCode.BILLING_ORDER_REJECTED,
        ),
        (
            "AddOrder",
            "No items added to cart so order cannot proceed",
            ErrorCode.BILLING_ORDER_REJECTED,
        ),
        (
            "AddOrder",
            "Unable to add order when client status is Closed",
            ErrorCode.BILLING_ORDER_REJECTED,
        ),
        # Unlisted messages fall back to what the action is about.
        ("GetClientsDetails", "Something new", ErrorCode.BILLING_CLIENT_NOT_LINKED),
        ("GetPayMethods", "Something new", ErrorCode.PAYMENT_METHOD_MISSING),
        ("AddOrder", "Something new", ErrorCode.BILLING_ORDER_REJECTED),
    ],
)
def test_whmcs_messages_map_to_business_codes(action: str, message: str, code: ErrorCode) -> None:
    error = classify_whmcs_error(action, message)
    assert type(error) is BusinessError
    assert (error.code, error.system, error.detail) == (code, System.WHMCS, message)


@pytest.mark.parametrize(
    "message",
    ["Authentication Failed", "Invalid IP 10.1.2.3", 'Invalid Permissions: API action "addorder"'],
)
def test_whmcs_credential_refusals_are_configuration_errors(message: str) -> None:
    error = classify_whmcs_error("AddOrder", message)
    assert isinstance(error, ConfigurationError)
    assert isinstance(error, BusinessError)
    assert error.code is ErrorCode.UPSTREAM_UNAVAILABLE


@pytest.mark.parametrize(
    ("status", "kind"),
    [
        (500, TransientError),
        (503, TransientError),
        (429, TransientError),
        (403, ConfigurationError),
        (404, ConfigurationError),
    ],
)
def test_whmcs_http_statuses(status: int, kind: type[Exception]) -> None:
    assert type(classify_whmcs_status("GetOrders", status)) is kind


@pytest.mark.parametrize(
    ("status", "error_code", "expected"),
    [
        (401, "INVALID_SESSION_ID", TransientError),
        (403, "REQUEST_LIMIT_EXCEEDED", TransientError),
        (503, "SERVER_UNAVAILABLE", TransientError),
        (500, None, TransientError),
        (400, "UNABLE_TO_LOCK_ROW", TransientError),
        (404, "NOT_FOUND", ErrorCode.ORDER_NOT_FOUND),
        (404, None, ErrorCode.ORDER_NOT_FOUND),
        (400, "FIELD_CUSTOM_VALIDATION_EXCEPTION", ErrorCode.INVALID_ORDER),
        (400, "STRING_TOO_LONG", ErrorCode.INVALID_ORDER),
        (400, "MALFORMED_QUERY", ConfigurationError),
        (400, "INVALID_FIELD", ConfigurationError),
        (403, "INSUFFICIENT_ACCESS_OR_READONLY", ConfigurationError),
        (403, None, ConfigurationError),
    ],
)
def test_salesforce_errors(status: int, error_code: str | None, expected: object) -> None:
    error = classify_salesforce_error("read_order", status, error_code, "text from Salesforce")
    assert error.system is System.SALESFORCE
    if isinstance(expected, ErrorCode):
        assert type(error) is BusinessError and error.code is expected
    else:
        assert type(error) is expected
    assert error.detail is not None and "text from Salesforce" in error.detail


@pytest.mark.parametrize(
    ("status", "body", "expected"),
    [
        (
            400,
            {"error": "invalid_grant", "error_description": "authentication failure"},
            ConfigurationError,
        ),
        (400, {"error": "invalid_client_id"}, ConfigurationError),
        (401, {"error": "invalid_client"}, ConfigurationError),
        (503, None, TransientError),
        (500, {"error": "server_error"}, TransientError),
    ],
)
def test_salesforce_token_errors(status: int, body: object, expected: type[Exception]) -> None:
    assert type(classify_token_error(status, body)) is expected


def _reply(result_code: object, status_code: str = "200", message: str = "OK") -> dict[str, object]:
    return {"resultCode": result_code, "status": {"message": message, "statusCode": status_code}}


@pytest.mark.parametrize("code", ["100", 100])
def test_freebit_success_accepts_string_and_number(code: object) -> None:
    assert classify_freebit_reply("add_account", 200, _reply(code)) is None


def test_freebit_refusal_carries_the_result_code() -> None:
    error = classify_freebit_reply(
        "esim_add_account", 200, _reply("400-356", "400", "addKind not allowed")
    )
    assert type(error) is BusinessError
    assert error.code is ErrorCode.SIM_PROVISIONING_FAILED
    assert error.detail == "resultCode 400-356: addKind not allowed"


@pytest.mark.parametrize(
    ("http_status", "body", "expected"),
    [
        (200, _reply("210", "401", "auth key expired"), FreebitAuthError),
        (401, None, FreebitAuthError),
        (503, None, TransientError),
        (200, _reply("500", "500", "internal"), TransientError),
        (200, _reply("429", "429", "busy"), TransientError),
        (200, "<html>", TransientError),
    ],
)
def test_freebit_auth_and_transient_replies(
    http_status: int, body: object, expected: type[Exception]
) -> None:
    assert type(classify_freebit_reply("get_account", http_status, body)) is expected
