"""The mapping tables from each system's errors to the one taxonomy."""

from __future__ import annotations

import pytest

from clients.errors import BusinessError, ConfigurationError, ErrorCode, System, TransientError
from clients.freebit import FREEBIT_STATUS_TABLE, FreebitAuthError, classify_freebit_reply
from clients.salesforce import (
    SALESFORCE_ERROR_TABLE,
    SALESFORCE_STATUS_TABLE,
    SALESFORCE_TOKEN_CONFIG_ERRORS,
    classify_salesforce_error,
    classify_token_error,
)
from clients.whmcs import WHMCS_ERROR_TABLE, classify_whmcs_error, classify_whmcs_status


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


# Every row of every mapping table, with the classification it must give. A new row without an
# entry here fails `test_every_*_row_is_classified_here`, so no mapping goes untested.

SALESFORCE_CODES: dict[str, object] = {
    "INVALID_SESSION_ID": TransientError,
    "REQUEST_LIMIT_EXCEEDED": TransientError,
    "SERVER_UNAVAILABLE": TransientError,
    "UNABLE_TO_LOCK_ROW": TransientError,
    "QUERY_TIMEOUT": TransientError,
    "REQUEST_RUNNING_TOO_LONG": TransientError,
    "NOT_FOUND": ErrorCode.ORDER_NOT_FOUND,
    "ENTITY_IS_DELETED": ErrorCode.ORDER_NOT_FOUND,
    "FIELD_CUSTOM_VALIDATION_EXCEPTION": ErrorCode.INVALID_ORDER,
    "REQUIRED_FIELD_MISSING": ErrorCode.INVALID_ORDER,
    "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST": ErrorCode.INVALID_ORDER,
    "STRING_TOO_LONG": ErrorCode.INVALID_ORDER,
    "FIELD_INTEGRITY_EXCEPTION": ErrorCode.INVALID_ORDER,
    "INVALID_CROSS_REFERENCE_KEY": ErrorCode.INVALID_ORDER,
    "MALFORMED_ID": ErrorCode.INVALID_ORDER,
    "MALFORMED_QUERY": ConfigurationError,
    "INVALID_FIELD": ConfigurationError,
    "INVALID_TYPE": ConfigurationError,
    "INVALID_FIELD_FOR_INSERT_UPDATE": ConfigurationError,
    "INSUFFICIENT_ACCESS": ConfigurationError,
    "INSUFFICIENT_ACCESS_OR_READONLY": ConfigurationError,
    "API_DISABLED_FOR_ORG": ConfigurationError,
    "API_CURRENTLY_DISABLED": ConfigurationError,
    "FUNCTIONALITY_NOT_ENABLED": ConfigurationError,
    "INVALID_AUTH_HEADER": ConfigurationError,
}
SALESFORCE_STATUSES: dict[int, object] = {
    400: ErrorCode.INVALID_ORDER,
    401: TransientError,
    403: ConfigurationError,
    404: ErrorCode.ORDER_NOT_FOUND,
}
FREEBIT_STATUS_CODES: dict[str, type[Exception]] = {
    "401": FreebitAuthError,
    "403": FreebitAuthError,
    "408": TransientError,
    "429": TransientError,
    "500": TransientError,
    "502": TransientError,
    "503": TransientError,
    "504": TransientError,
}
WHMCS_MESSAGES: dict[str, object] = {
    "Client Not Found": ErrorCode.BILLING_CLIENT_NOT_LINKED,
    "Client ID Not Found": ErrorCode.BILLING_CLIENT_NOT_LINKED,
    "Invalid Payment Method. Valid options include banktransfer": ErrorCode.PAYMENT_METHOD_MISSING,
    "Order ID not found or Status not Pending": ErrorCode.BILLING_ORDER_REJECTED,
    "No items added to cart so order cannot proceed": ErrorCode.BILLING_ORDER_REJECTED,
    "Unable to add order when client status is Closed": ErrorCode.BILLING_ORDER_REJECTED,
    "Authentication Failed": ConfigurationError,
    "Invalid IP 192.0.2.7": ConfigurationError,
    "Invalid Permissions: API action": ConfigurationError,
}


def _assert_kind(error: Exception, expected: object) -> None:
    if isinstance(expected, ErrorCode):
        assert type(error) is BusinessError and error.code is expected
    else:
        assert type(error) is expected


def test_every_salesforce_table_row_is_classified_here() -> None:
    assert set(SALESFORCE_CODES) == set(SALESFORCE_ERROR_TABLE)
    assert set(SALESFORCE_STATUSES) == set(SALESFORCE_STATUS_TABLE)


@pytest.mark.parametrize(("error_code", "expected"), SALESFORCE_CODES.items())
def test_salesforce_error_code_classification(error_code: str, expected: object) -> None:
    # The errorCode decides whatever the status says.
    for status in (400, 403, 500):
        _assert_kind(classify_salesforce_error("op", status, error_code, "text"), expected)


@pytest.mark.parametrize(("status", "expected"), SALESFORCE_STATUSES.items())
def test_salesforce_status_classification(status: int, expected: object) -> None:
    _assert_kind(classify_salesforce_error("op", status, "SOMETHING_NEW", None), expected)


@pytest.mark.parametrize("error", sorted(SALESFORCE_TOKEN_CONFIG_ERRORS))
def test_salesforce_token_configuration_errors(error: str) -> None:
    assert type(classify_token_error(400, {"error": error})) is ConfigurationError


def test_every_freebit_table_row_is_classified_here() -> None:
    assert set(FREEBIT_STATUS_CODES) == set(FREEBIT_STATUS_TABLE)


@pytest.mark.parametrize(("status_code", "expected"), FREEBIT_STATUS_CODES.items())
def test_freebit_status_code_classification(status_code: str, expected: type[Exception]) -> None:
    error = classify_freebit_reply("add_account", 200, _reply("999", status_code, "text"))
    assert type(error) is expected
    # statusCode may come as a number as well as a string.
    numeric = classify_freebit_reply("add_account", 200, _reply("999", int(status_code), "text"))  # type: ignore[arg-type]
    assert type(numeric) is expected


def test_every_whmcs_table_row_is_classified_here() -> None:
    for rule in WHMCS_ERROR_TABLE:
        assert any(rule.matches(message) for message in WHMCS_MESSAGES), rule.text


@pytest.mark.parametrize(("message", "expected"), WHMCS_MESSAGES.items())
def test_whmcs_message_classification(message: str, expected: object) -> None:
    for action in ("GetClientsDetails", "GetPayMethods", "AddOrder", "AcceptOrder"):
        error = classify_whmcs_error(action, message)
        if expected is ConfigurationError:
            assert type(error) is ConfigurationError
        else:
            _assert_kind(error, expected)
