"""The decision rules of the error taxonomy, one behaviour per test.

These do not restate the mapping tables row by row: they state what each table must decide
(an unknown error on a read is transient, a lost reply to a write is outcome-unknown, a refusal
of *us* is configuration, not a customer's business code) and try it on each system.
"""

from __future__ import annotations

import ssl

import httpx
import pytest
import requests
from prometheus_client import REGISTRY
from urllib3.exceptions import MaxRetryError, NewConnectionError, ProtocolError

from clients.errors import (
    BusinessError,
    ClientError,
    ConfigurationError,
    ErrorCode,
    ErrorKind,
    OutcomeUnknownError,
    System,
    TransientError,
    UnrecognisedError,
)
from clients.freebit import FreebitAuthError, classify_freebit_reply
from clients.http import transport_error
from clients.metrics import observe
from clients.salesforce import (
    SALESFORCE_COMMON_ERRORS,
    SALESFORCE_OPERATION_ERRORS,
    classify_salesforce_error,
)
from clients.salesforce_auth import classify_token_error
from clients.salesforce_http import requests_error
from clients.whmcs import AccessRefusedError, classify_whmcs_error, classify_whmcs_status


def _freebit(result_code: object, status_code: object, message: str = "text") -> dict[str, object]:
    return {"resultCode": result_code, "status": {"message": message, "statusCode": status_code}}


# -- An error no table knows is transient, with an alert; never a customer-visible code. -----


@pytest.mark.parametrize(
    "error",
    [
        classify_whmcs_error("GetPayMethods", "Something WHMCS added in 9.1"),
        classify_whmcs_error("GetClientsDetails", "Something new"),
        classify_whmcs_error("AddOrder", "Something new"),
        classify_whmcs_status("GetOrders", 418),
        classify_salesforce_error("read_catalog", 404, "NOT_FOUND", "no such pricebook"),
        classify_salesforce_error("read_order", 400, "SOMETHING_NEW", "text"),
        classify_salesforce_error("update_order", 400, "CANNOT_INSERT_UPDATE_ACTIVATE_ENTITY", "x"),
        classify_freebit_reply("get_account", 200, _freebit("999", "418"), write=False),
        classify_freebit_reply("get_account", 200, "<html>", write=False),
    ],
    ids=lambda error: repr(error)[:60],
)
def test_an_unknown_error_is_transient_and_never_a_business_code(error: ClientError) -> None:
    assert isinstance(error, UnrecognisedError)
    assert error.kind is ErrorKind.NOT_SENT and not error.kind.parks
    assert error.code is ErrorCode.UPSTREAM_UNAVAILABLE


async def test_an_unknown_error_raises_the_alert_metric() -> None:
    def alerts() -> float:
        labels = {"system": "whmcs", "operation": "AlertProbe", "reason": "unrecognised"}
        return REGISTRY.get_sample_value("fulfillment_client_alerts_total", labels) or 0.0

    before = alerts()
    with pytest.raises(UnrecognisedError):
        async with observe(System.WHMCS, "AlertProbe"):
            raise classify_whmcs_error("GetPayMethods", "Something new")
    assert alerts() == before + 1


def test_a_catalog_404_is_not_order_not_found_but_an_orders_is() -> None:
    catalog = classify_salesforce_error("read_catalog", 404, "NOT_FOUND", "gone")
    order = classify_salesforce_error("read_order", 404, "NOT_FOUND", "gone")
    assert not isinstance(catalog, BusinessError)
    assert isinstance(order, BusinessError) and order.code is ErrorCode.ORDER_NOT_FOUND


def test_business_codes_are_only_given_where_an_operation_knows_them() -> None:
    # No errorCode means the same thing for every operation: that would be a guess.
    assert not any(isinstance(d, ErrorCode) for d in SALESFORCE_COMMON_ERRORS.values())
    for operation, table in SALESFORCE_OPERATION_ERRORS.items():
        for error_code, code in table.items():
            error = classify_salesforce_error(operation, 400, error_code, "text", write=True)
            assert isinstance(error, BusinessError) and error.code is code


# -- A write whose reply was lost is outcome-unknown; one never sent is safe to repeat. ------


@pytest.mark.parametrize(
    "exc",
    [
        httpx.ReadTimeout("read"),
        httpx.RemoteProtocolError("peer closed connection without sending complete message"),
        httpx.ReadError("reset"),
        httpx.WriteError("broken pipe"),
    ],
)
def test_a_lost_reply_to_a_write_is_outcome_unknown_and_to_a_read_plain_transient(
    exc: httpx.TransportError,
) -> None:
    write = transport_error(System.WHMCS, exc, write=True)
    read = transport_error(System.WHMCS, exc, write=False)
    assert type(write) is OutcomeUnknownError and write.kind is ErrorKind.OUTCOME_UNKNOWN
    assert type(read) is TransientError and read.kind is ErrorKind.NOT_SENT


@pytest.mark.parametrize(
    "exc", [httpx.ConnectError("refused"), httpx.ConnectTimeout("slow"), httpx.PoolTimeout("busy")]
)
def test_a_write_that_never_connected_is_safe_to_repeat(exc: httpx.TransportError) -> None:
    error = transport_error(System.FREEBIT, exc, write=True)
    assert type(error) is TransientError and error.kind is ErrorKind.NOT_SENT


def test_a_tls_verification_failure_is_our_configuration() -> None:
    cause = ssl.SSLCertVerificationError("certificate verify failed")
    exc = httpx.ConnectError("[SSL: CERTIFICATE_VERIFY_FAILED]")
    exc.__cause__ = cause
    assert isinstance(transport_error(System.WHMCS, exc, write=True), ConfigurationError)
    ssl_error = requests.exceptions.SSLError("CERTIFICATE_VERIFY_FAILED")
    assert isinstance(requests_error(ssl_error, write=True), ConfigurationError)


def test_requests_failures_split_never_sent_from_outcome_unknown() -> None:
    refused = requests.exceptions.ConnectionError(
        MaxRetryError(None, "/", NewConnectionError(None, "refused"))  # type: ignore[arg-type]
    )
    reset = requests.exceptions.ConnectionError(ProtocolError("Connection aborted."))
    for never_sent in (refused, requests.exceptions.ConnectTimeout("slow")):
        assert type(requests_error(never_sent, write=True)) is TransientError
    for lost in (
        reset,
        requests.exceptions.ReadTimeout("slow"),
        requests.exceptions.ChunkedEncodingError("cut"),
        requests.exceptions.JSONDecodeError("bad", "<html>", 0),
    ):
        assert type(requests_error(lost, write=True)) is OutcomeUnknownError
        assert not isinstance(requests_error(lost, write=False), OutcomeUnknownError)
    assert isinstance(
        requests_error(requests.exceptions.InvalidURL("x"), write=False), ConfigurationError
    )


def test_a_server_error_to_a_write_is_outcome_unknown_but_a_refusal_before_work_is_not() -> None:
    assert isinstance(
        classify_salesforce_error("update_order", 500, None, None, write=True), OutcomeUnknownError
    )
    assert isinstance(
        classify_salesforce_error("update_order", 503, "SERVER_UNAVAILABLE", "x", write=True),
        OutcomeUnknownError,
    )
    assert type(classify_salesforce_error("read_order", 500, None, None)) is TransientError
    # A lock conflict rolls the transaction back: nothing was written.
    locked = classify_salesforce_error("update_order", 400, "UNABLE_TO_LOCK_ROW", "x", write=True)
    assert type(locked) is TransientError
    write_5xx = classify_freebit_reply("esim_add_account", 502, None, write=True)
    assert isinstance(write_5xx, OutcomeUnknownError)
    busy = classify_freebit_reply("esim_add_account", 200, _freebit("429", "429"), write=True)
    assert type(busy) is TransientError


def test_salesforce_errors_that_wrap_a_lock_or_timeout_are_transient() -> None:
    for message in (
        "UNABLE_TO_LOCK_ROW, unable to obtain exclusive access to this record: []",
        "OrderTrigger: execution of AfterUpdate caused by: System.CalloutException: Read timed out",
    ):
        error = classify_salesforce_error(
            "update_order", 400, "CANNOT_INSERT_UPDATE_ACTIVATE_ENTITY", message, write=True
        )
        assert type(error) is TransientError


# -- A refusal of *us* is configuration: retried on a long backoff, never parking at once. ----


@pytest.mark.parametrize(
    "error",
    [
        classify_whmcs_error("AddOrder", "Authentication Failed"),
        classify_whmcs_error("GetOrders", "Invalid IP 192.0.2.7"),
        classify_whmcs_error("AcceptOrder", 'Invalid Permissions: API action "acceptorder"'),
        # The gateway we send is not active: our setting, not the customer's missing card.
        classify_whmcs_error("AddOrder", "Invalid Payment Method. Valid options include stripe"),
        classify_whmcs_status("GetOrders", 403),
        classify_salesforce_error("read_order", 400, "INVALID_FIELD", "No such column"),
        classify_salesforce_error(
            "update_order", 400, "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST", "x"
        ),
        classify_salesforce_error("read_order", 403, None, None),
        classify_token_error(400, {"error": "invalid_grant"}),
        classify_freebit_reply("auth", 200, _freebit("201", "401"), write=False),
    ],
    ids=lambda error: repr(error)[:60],
)
def test_a_refusal_of_our_setup_is_configuration_with_a_long_backoff(error: ClientError) -> None:
    assert isinstance(error, ConfigurationError)
    assert not isinstance(error, BusinessError)
    assert error.kind is ErrorKind.CONFIGURATION and not error.kind.parks
    assert error.retry_after is not None and error.retry_after >= 60


def test_only_credential_and_address_refusals_pause_every_whmcs_call() -> None:
    assert isinstance(
        classify_whmcs_error("GetOrders", "Authentication Failed"), AccessRefusedError
    )
    gateway = classify_whmcs_error("AddOrder", "Invalid Payment Method. Valid options include x")
    assert not isinstance(gateway, AccessRefusedError)


def test_freebit_oem_refusal_is_configuration_but_a_stale_auth_key_is_refreshed() -> None:
    oem = classify_freebit_reply("auth", 200, _freebit("201", "401"), write=False)
    assert isinstance(oem, FreebitAuthError)
    stale = classify_freebit_reply("get_account", 200, _freebit("202", "401"), write=False)
    assert isinstance(stale, TransientError)


def test_the_salesforce_api_limit_waits_long_and_alerts() -> None:
    labels = {"system": "salesforce", "operation": "read_order", "reason": "rate_limited"}
    before = REGISTRY.get_sample_value("fulfillment_client_alerts_total", labels) or 0.0
    error = classify_salesforce_error("read_order", 403, "REQUEST_LIMIT_EXCEEDED", "TotalRequests")
    assert type(error) is TransientError
    assert error.retry_after is not None and error.retry_after >= 300
    assert REGISTRY.get_sample_value("fulfillment_client_alerts_total", labels) == before + 1


# -- Business refusals carry their code and the upstream's words. -----------------------------


def test_business_refusals_carry_the_code_and_the_upstreams_words() -> None:
    cases = [
        (
            classify_whmcs_error("GetClientsDetails", "Client Not Found"),
            ErrorCode.BILLING_CLIENT_NOT_LINKED,
        ),
        (
            classify_whmcs_error("AddOrder", "Client ID Not Found"),
            ErrorCode.BILLING_CLIENT_NOT_LINKED,
        ),
        (
            classify_whmcs_error("AddOrder", "Unable to add order when client status is Closed"),
            ErrorCode.BILLING_ORDER_REJECTED,
        ),
        (
            classify_freebit_reply(
                "esim_add_account",
                200,
                _freebit("400-356", "400", "addKind not allowed"),
                write=True,
            ),
            ErrorCode.SIM_PROVISIONING_FAILED,
        ),
        (
            classify_salesforce_error(
                "update_order", 400, "FIELD_CUSTOM_VALIDATION_EXCEPTION", "Zip"
            ),
            ErrorCode.INVALID_ORDER,
        ),
    ]
    for error, code in cases:
        assert isinstance(error, BusinessError) and error.code is code
        assert error.kind.parks
        assert error.detail and error.detail not in ("", None)
    freebit = cases[3][0]
    assert freebit is not None and freebit.detail == "resultCode 400-356; addKind not allowed"


@pytest.mark.parametrize("code", ["100", 100])
def test_freebit_success_accepts_string_and_number(code: object) -> None:
    assert classify_freebit_reply("add_account", 200, _freebit(code, "200"), write=True) is None


def test_a_failure_becomes_the_record_the_workflow_keeps() -> None:
    error = classify_whmcs_error("AddOrder", "No items added to cart so order cannot proceed")
    failure = error.to_failure()
    assert (failure.code, failure.kind, failure.system) == (
        ErrorCode.BILLING_ORDER_REJECTED,
        ErrorKind.BUSINESS,
        System.WHMCS,
    )
    assert failure.summary() == (
        "whmcs: AddOrder refused (No items added to cart so order cannot proceed)"
    )
