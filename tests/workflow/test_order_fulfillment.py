"""The fulfillment workflow on the time-skipping server, its activities replaced by doubles
under the same names (`tests/workflow/upstreams.py`)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import timedelta
from typing import Any

import pytest
from temporalio.api.enums.v1 import EventType
from temporalio.client import (
    Client,
    WorkflowFailureError,
    WorkflowHandle,
    WorkflowUpdateFailedError,
)
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.exceptions import ApplicationError, CancelledError
from temporalio.service import RPCError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from domain.billing import BillingOrderStatus
from domain.errors import ErrorCode, ErrorKind, Failure
from domain.fulfillment import (
    FulfillmentInput,
    FulfillmentOptions,
    FulfillmentProgress,
    FulfillmentResult,
    FulfillmentStatus,
    OperatorRequest,
    Step,
    Trigger,
    TriggerSource,
    workflow_id,
)
from domain.order import ActivationStatus, Address
from domain.sim import SimActivation, SimPhase, SimType
from domain.steps import Activity
from tests.workflow.upstreams import ORDER_ID, PHONE, Upstreams, business, sim_order, transient
from workflows.order_fulfillment import OrderFulfillment

OPTIONS = FulfillmentOptions(
    operator_wait=timedelta(days=14),
    retry_budget=timedelta(minutes=10),
    sim_activation_deadline=timedelta(minutes=30),
    sim_poll_first=timedelta(seconds=5),
    sim_poll_max=timedelta(minutes=1),
)


@pytest.fixture
async def client(time_skipping_env: WorkflowEnvironment) -> Client:
    config = time_skipping_env.client.config()
    config["data_converter"] = pydantic_data_converter
    return Client(**config)


@pytest.fixture
def upstreams() -> Upstreams:
    return Upstreams()


Start = Callable[..., Awaitable[WorkflowHandle[Any, FulfillmentResult]]]


@pytest.fixture
async def start(client: Client, upstreams: Upstreams, task_queue: str) -> AsyncIterator[Start]:
    async with Worker(
        client,
        task_queue=task_queue,
        workflows=[OrderFulfillment],
        activities=upstreams.activities(),
    ):
        started: list[WorkflowHandle[Any, FulfillmentResult]] = []

        async def start_fulfillment(
            options: FulfillmentOptions = OPTIONS,
        ) -> WorkflowHandle[Any, FulfillmentResult]:
            handle = await client.start_workflow(
                OrderFulfillment.run,
                FulfillmentInput(
                    sf_order_id=ORDER_ID,
                    trigger=Trigger(source=TriggerSource.CDC, replay_id="7"),
                    options=options,
                ),
                id=workflow_id(ORDER_ID),
                task_queue=task_queue,
            )
            started.append(handle)
            return handle

        yield start_fulfillment
        # Every test uses the same order (and so workflow) id: end what a test left parked.
        for handle in started:
            with contextlib.suppress(RPCError):
                await handle.terminate("test over")


async def progress(handle: WorkflowHandle[Any, Any]) -> FulfillmentProgress:
    return await handle.query(OrderFulfillment.progress)


class Watch:
    """Polls a fulfillment's `progress`, letting workflow time pass meanwhile: timers and retry
    backoffs move only while the test server may skip time."""

    def __init__(self, env: WorkflowEnvironment) -> None:
        self._env = env

    async def until(
        self, handle: WorkflowHandle[Any, Any], check: Callable[[FulfillmentProgress], bool]
    ) -> FulfillmentProgress:
        async with asyncio.timeout(30):
            while True:
                seen = await progress(handle)
                if check(seen):
                    return seen
                await self._env.sleep(timedelta(seconds=20))

    async def parked(self, handle: WorkflowHandle[Any, Any]) -> FulfillmentProgress:
        return await self.until(handle, lambda p: p.waiting_for_operator)


@pytest.fixture
def watch(time_skipping_env: WorkflowEnvironment) -> Watch:
    return Watch(time_skipping_env)


def operator(reason: str = "fixed at the source", request_id: str | None = None) -> OperatorRequest:
    return OperatorRequest(reason=reason, requested_by="ops@example.jp", request_id=request_id)


async def search_attributes(handle: WorkflowHandle[Any, Any]) -> dict[str, Any]:
    described = await handle.describe()
    return {
        key: values[0] if values else None for key, values in described.search_attributes.items()
    }


# -- the happy paths ------------------------------------------------------------------------------


async def test_an_internet_order_is_activated_and_written_back(
    start: Start, upstreams: Upstreams
) -> None:
    handle = await start()
    result = await handle.result()

    assert result.status is FulfillmentStatus.ACTIVATED
    assert result.whmcs_order_id == 101
    assert upstreams.whmcs_orders == {101: BillingOrderStatus.ACTIVE}
    assert [w.status for w in upstreams.status_writes] == [ActivationStatus.ACTIVATING]
    [success] = upstreams.success_writes
    assert (success.whmcs_order_id, success.service_ids) == (101, {"802000000000001AAA": 1010})
    assert upstreams.calls[Activity.REGISTER_SIM.value] == 0
    # The portal's views of the order, and the WHMCS client's, are invalidated.
    [invalidation] = upstreams.invalidations
    assert (invalidation.sf_account_id, invalidation.whmcs_client_id) == ("001000000000001AAA", 1)
    # The read model ends activated, each write newer than the last.
    assert upstreams.records[-1].status is FulfillmentStatus.ACTIVATED
    versions = [r.version for r in upstreams.records]
    assert versions == sorted(versions) and len(set(versions)) == len(versions)
    done = await progress(handle)
    assert done.steps_done == list(Step)
    attributes = await search_attributes(handle)
    assert attributes["FulfillmentStatus"] == "activated"
    assert attributes["SalesforceOrderId"] == ORDER_ID
    assert attributes["SalesforceAccountId"] == "001000000000001AAA"
    # Each change is not a command of its own: per workflow task, at most one upsert of ours
    # (the SDK upserts TemporalChangeVersion by itself when a patch is first taken) and one
    # read-model write.
    upserts_per_task, writes_per_task = [0], [0]
    async for event in handle.fetch_history_events():
        if event.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED:
            upserts_per_task.append(0)
            writes_per_task.append(0)
        elif event.event_type == EventType.EVENT_TYPE_UPSERT_WORKFLOW_SEARCH_ATTRIBUTES:
            fields = event.upsert_workflow_search_attributes_event_attributes.search_attributes
            upserts_per_task[-1] += set(fields.indexed_fields) != {"TemporalChangeVersion"}
        elif event.event_type == EventType.EVENT_TYPE_MARKER_RECORDED:
            marker = event.marker_recorded_event_attributes.marker_name
            writes_per_task[-1] += marker == "core_local_activity"
    assert max(upserts_per_task) == 1 and max(writes_per_task) == 1
    assert sum(writes_per_task) == len(upstreams.records)


async def test_a_sim_order_polls_the_line_with_timers_until_it_is_active(
    start: Start, upstreams: Upstreams
) -> None:
    upstreams.order = sim_order()
    upstreams.polls_to_activate = 4
    result = await (await start()).result()
    assert result.status is FulfillmentStatus.ACTIVATED
    assert upstreams.lines[PHONE].phase is SimPhase.ACTIVE
    assert upstreams.calls[Activity.REGISTER_SIM.value] == 1
    assert upstreams.calls[Activity.CHECK_SIM.value] == 4
    # Accepted only after the line is active.
    assert upstreams.whmcs_orders[result.whmcs_order_id or 0] is BillingOrderStatus.ACTIVE


async def test_a_completion_reported_by_signal_ends_the_activation_wait(
    start: Start, watch: Watch, upstreams: Upstreams
) -> None:
    upstreams.order = sim_order()
    upstreams.sim_outcome = SimPhase.IN_PROGRESS  # polling alone never sees it finish
    handle = await start()
    await watch.until(handle, lambda p: p.step is Step.PROVISION_SIMS)
    await watch.until(handle, lambda p: upstreams.calls[Activity.CHECK_SIM.value] >= 1)
    await handle.signal(
        OrderFulfillment.sim_activation_reported,
        SimActivation(
            phone_number=PHONE, phase=SimPhase.ACTIVE, state="active", sim_type=SimType.ESIM
        ),
    )
    result = await handle.result()
    assert result.status is FulfillmentStatus.ACTIVATED


# -- one Salesforce call reads the order and marks it Activating ----------------------------------


async def test_the_first_attempt_reads_and_marks_activating_in_one_salesforce_call(
    start: Start, upstreams: Upstreams
) -> None:
    result = await (await start()).result()
    assert result.status is FulfillmentStatus.ACTIVATED
    salesforce = {
        name: upstreams.calls[name.value]
        for name in (
            Activity.LOAD_ORDER,
            Activity.LOAD_ORDER_AND_MARK_ACTIVATING,
            Activity.WRITE_BACK_STATUS,
            Activity.WRITE_BACK_SUCCESS,
        )
    }
    assert salesforce == {
        Activity.LOAD_ORDER: 0,
        Activity.LOAD_ORDER_AND_MARK_ACTIVATING: 1,
        Activity.WRITE_BACK_STATUS: 0,
        Activity.WRITE_BACK_SUCCESS: 1,
    }
    # The success write names the attempt the Activating write started.
    [activating] = upstreams.status_writes
    assert upstreams.success_writes[0].attempted_at == activating.attempted_at


async def test_an_order_failing_its_checks_after_the_combined_call_ends_failed_as_before(
    start: Start, watch: Watch, upstreams: Upstreams
) -> None:
    _no_address(upstreams)
    handle = await start()
    waiting = await watch.parked(handle)
    assert waiting.step is Step.LOAD_ORDER and waiting.status is FulfillmentStatus.FAILED
    # Marked Activating with the read, then moved on as any later failure is: what Salesforce
    # ends with is the Failed write-back, with the code and message, of the same attempt.
    activating, failed = upstreams.status_writes
    assert activating.status is ActivationStatus.ACTIVATING
    assert (failed.status, failed.error_code) == (ActivationStatus.FAILED, ErrorCode.INVALID_ORDER)
    assert failed.error_message and "billing address" in failed.error_message
    assert failed.attempted_at == activating.attempted_at
    # The read model never said activating: the order was not taken on.
    assert FulfillmentStatus.ACTIVATING not in {r.status for r in upstreams.records}


async def test_an_activating_write_refused_with_the_read_parks_at_mark_activating(
    start: Start, watch: Watch, upstreams: Upstreams
) -> None:
    upstreams.refuse_activating = Failure(
        code=ErrorCode.INVALID_ORDER,
        kind=ErrorKind.BUSINESS,
        message="update_order failed",
        detail="FIELD_CUSTOM_VALIDATION_EXCEPTION: Activation needs an approver",
    )
    handle = await start()
    waiting = await watch.parked(handle)
    assert waiting.step is Step.MARK_ACTIVATING
    assert waiting.last_error == upstreams.refuse_activating
    assert upstreams.salesforce_status is not None
    assert upstreams.salesforce_status.status is ActivationStatus.FAILED
    # Fixed in Salesforce: the retry resumes at mark_activating with a write of its own, and
    # does not read the order again (that step does not depend on its data).
    upstreams.refuse_activating = None
    await handle.execute_update(OrderFulfillment.retry_update, operator())
    assert (await handle.result()).status is FulfillmentStatus.ACTIVATED
    assert upstreams.calls[Activity.LOAD_ORDER_AND_MARK_ACTIVATING.value] == 1
    assert [w.status for w in upstreams.status_writes] == [
        ActivationStatus.FAILED,
        ActivationStatus.ACTIVATING,
    ]


async def test_a_failing_combined_call_is_repeated_whole(
    start: Start, upstreams: Upstreams
) -> None:
    upstreams.fail(Activity.LOAD_ORDER_AND_MARK_ACTIVATING, transient("reply lost"))
    result = await (await start()).result()
    assert result.status is FulfillmentStatus.ACTIVATED
    assert upstreams.calls[Activity.LOAD_ORDER_AND_MARK_ACTIVATING.value] == 2
    assert upstreams.calls[Activity.WRITE_BACK_STATUS.value] == 0


# -- business errors park, and write Failed -------------------------------------------------------


def _missing_order(u: Upstreams) -> None:
    u.order = None


def _no_address(u: Upstreams) -> None:
    assert u.order is not None
    u.order = u.order.model_copy(update={"billing_address": Address()})


def _unmapped_product(u: Upstreams) -> None:
    assert u.order is not None
    item = u.order.items[0]
    unmapped = item.product.model_copy(update={"whmcs_product_id": None})
    u.order = u.order.model_copy(update={"items": (item.model_copy(update={"product": unmapped}),)})


def _unlinked_account(u: Upstreams) -> None:
    assert u.order is not None and u.order.account is not None
    account = u.order.account.model_copy(update={"whmcs_account_field": None})
    u.order = u.order.model_copy(update={"account": account})


def _no_pay_method(u: Upstreams) -> None:
    u.pay_methods.clear()


def _closed_client(u: Upstreams) -> None:
    u.fail(
        Activity.CREATE_BILLING_ORDER,
        business(ErrorCode.BILLING_ORDER_REJECTED, "client is Closed"),
    )


def _sim_refused(u: Upstreams) -> None:
    u.order = sim_order()
    u.sim_outcome = SimPhase.FAILED


def _sim_never_active(u: Upstreams) -> None:
    u.order = sim_order()
    u.sim_outcome = SimPhase.IN_PROGRESS


@pytest.mark.parametrize(
    ("arrange", "step", "code"),
    [
        (_missing_order, Step.LOAD_ORDER, ErrorCode.ORDER_NOT_FOUND),
        (_no_address, Step.LOAD_ORDER, ErrorCode.INVALID_ORDER),
        (_unmapped_product, Step.LOAD_ORDER, ErrorCode.PRODUCT_NOT_MAPPED),
        (_unlinked_account, Step.RESOLVE_BILLING_CLIENT, ErrorCode.BILLING_CLIENT_NOT_LINKED),
        (_no_pay_method, Step.VALIDATE_PAYMENT_METHOD, ErrorCode.PAYMENT_METHOD_MISSING),
        (_closed_client, Step.CREATE_BILLING_ORDER, ErrorCode.BILLING_ORDER_REJECTED),
        (_sim_refused, Step.PROVISION_SIMS, ErrorCode.SIM_PROVISIONING_FAILED),
        (_sim_never_active, Step.PROVISION_SIMS, ErrorCode.SIM_PROVISIONING_TIMEOUT),
    ],
    ids=lambda value: value.value if isinstance(value, ErrorCode) else "",
)
async def test_each_business_error_parks_and_writes_failed_with_its_code(
    start: Start,
    watch: Watch,
    upstreams: Upstreams,
    arrange: Callable[[Upstreams], None],
    step: Step,
    code: ErrorCode,
) -> None:
    arrange(upstreams)
    handle = await start()
    waiting = await watch.parked(handle)
    assert (waiting.status, waiting.step) == (FulfillmentStatus.FAILED, step)
    assert waiting.last_error is not None and waiting.last_error.code is code
    written = upstreams.salesforce_status
    assert written is not None
    assert (written.status, written.error_code) == (ActivationStatus.FAILED, code)
    assert written.error_message
    assert upstreams.records[-1].error_code is code
    attributes = await search_attributes(handle)
    assert (attributes["FulfillmentStatus"], attributes["FulfillmentErrorCode"]) == (
        "failed",
        code.value,
    )
    assert attributes["FulfillmentStep"] == step.value
    # Nothing after the failed step ran.
    assert upstreams.calls[Activity.ACCEPT_BILLING_ORDER.value] == 0


async def test_a_transient_failure_past_the_budget_parks_as_upstream_unavailable(
    start: Start, watch: Watch, upstreams: Upstreams
) -> None:
    upstreams.fail(
        Activity.VALIDATE_PAYMENT_METHOD, *(transient("WHMCS timed out") for _ in range(200))
    )
    handle = await start(OPTIONS.model_copy(update={"retry_budget": timedelta(minutes=2)}))
    waiting = await watch.parked(handle)
    assert waiting.step is Step.VALIDATE_PAYMENT_METHOD
    assert waiting.last_error is not None
    assert waiting.last_error.code is ErrorCode.UPSTREAM_UNAVAILABLE
    assert "WHMCS timed out" in (waiting.last_error.detail or "")
    assert upstreams.calls[Activity.VALIDATE_PAYMENT_METHOD.value] > 1


async def test_transient_failures_within_the_budget_are_retried_without_parking(
    start: Start, upstreams: Upstreams
) -> None:
    upstreams.fail(Activity.ACCEPT_BILLING_ORDER, transient(), transient())
    result = await (await start()).result()
    assert result.status is FulfillmentStatus.ACTIVATED
    assert upstreams.calls[Activity.ACCEPT_BILLING_ORDER.value] == 3
    assert all(w.status is not ActivationStatus.FAILED for w in upstreams.status_writes)


# -- retry ----------------------------------------------------------------------------------------


async def test_retry_resumes_at_the_failed_step_and_not_before(
    start: Start, watch: Watch, upstreams: Upstreams
) -> None:
    upstreams.pay_methods.clear()
    handle = await start()
    await watch.parked(handle)
    upstreams.pay_methods[1] = ["RemoteCreditCard"]  # the customer added a card in WHMCS
    resumed = await handle.execute_update(OrderFulfillment.retry_update, operator())
    assert resumed.attempt == 2
    result = await handle.result()
    assert result.status is FulfillmentStatus.ACTIVATED
    assert upstreams.calls[Activity.LOAD_ORDER_AND_MARK_ACTIVATING.value] == 1
    assert upstreams.calls[Activity.RESOLVE_BILLING_CLIENT.value] == 1
    assert upstreams.calls[Activity.VALIDATE_PAYMENT_METHOD.value] == 2
    assert upstreams.calls[Activity.CREATE_BILLING_ORDER.value] == 1
    # Salesforce went Activating -> Failed -> Activating again, then Activated.
    assert [w.status for w in upstreams.status_writes] == [
        ActivationStatus.ACTIVATING,
        ActivationStatus.FAILED,
        ActivationStatus.ACTIVATING,
    ]
    assert upstreams.records[-1].attempts == 2


async def test_a_retry_clears_the_error_code_searched_for_at_once(
    start: Start, watch: Watch, upstreams: Upstreams
) -> None:
    upstreams.pay_methods.clear()
    handle = await start()
    await watch.parked(handle)
    upstreams.pay_methods[1] = ["RemoteCreditCard"]
    await handle.execute_update(OrderFulfillment.retry_update, operator())
    await handle.result()
    history = await handle.fetch_history()
    accepted = next(
        e.event_id
        for e in history.events
        if e.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_ACCEPTED
    )
    resumed = next(
        fields
        for e in history.events
        if e.event_id > accepted
        and e.event_type == EventType.EVENT_TYPE_UPSERT_WORKFLOW_SEARCH_ATTRIBUTES
        # Ours, not the SDK's record of the retry-clears-error-code patch.
        and "FulfillmentStatus"
        in (
            fields
            := e.upsert_workflow_search_attributes_event_attributes.search_attributes.indexed_fields
        )
    )
    # Unset with the resumed run's first change, not only once the order is Activated.
    assert "FulfillmentErrorCode" in resumed
    assert b"activated" not in resumed["FulfillmentStatus"].data


async def test_retry_of_a_data_error_rereads_the_order_fixed_at_its_source(
    start: Start, watch: Watch, upstreams: Upstreams
) -> None:
    good = upstreams.order
    assert good is not None
    upstreams.order = good.model_copy(update={"billing_address": Address(city="Shibuya-ku")})
    handle = await start()
    waiting = await watch.parked(handle)
    assert waiting.last_error is not None and waiting.last_error.code is ErrorCode.INVALID_ORDER
    upstreams.order = good
    await handle.execute_update(OrderFulfillment.retry_update, operator())
    assert (await handle.result()).status is FulfillmentStatus.ACTIVATED
    assert upstreams.calls[Activity.LOAD_ORDER_AND_MARK_ACTIVATING.value] == 2


async def test_a_sim_failure_retried_rereads_the_order_and_keeps_the_billing_order(
    start: Start, watch: Watch, upstreams: Upstreams
) -> None:
    upstreams.order = sim_order()
    upstreams.sim_outcome = SimPhase.FAILED
    handle = await start()
    await watch.parked(handle)
    upstreams.lines.clear()  # Freebit support cleared the failed line
    upstreams.sim_outcome = SimPhase.ACTIVE
    upstreams.polls_to_activate = 1
    await handle.execute_update(OrderFulfillment.retry_update, operator())
    result = await handle.result()
    assert result.status is FulfillmentStatus.ACTIVATED
    assert upstreams.calls[Activity.LOAD_ORDER_AND_MARK_ACTIVATING.value] == 2
    assert upstreams.calls[Activity.CREATE_BILLING_ORDER.value] == 1
    assert upstreams.adds == 1


async def test_a_retry_signal_works_like_the_update_and_a_repeated_request_counts_once(
    start: Start, watch: Watch, upstreams: Upstreams
) -> None:
    upstreams.pay_methods.clear()
    handle = await start()
    await watch.parked(handle)
    upstreams.pay_methods[1] = ["BankAccount"]
    await handle.signal(OrderFulfillment.retry_signal, operator(request_id="req-1"))
    # The same request again, as an update (the API retried its POST): accepted, no second retry.
    again = await handle.execute_update(OrderFulfillment.retry_update, operator(request_id="req-1"))
    assert again.attempt == 2
    assert (await handle.result()).status is FulfillmentStatus.ACTIVATED
    assert upstreams.records[-1].attempts == 2
    # The signal was the decision: the workflow recorded it, once.
    assert list(upstreams.operator_actions) == ["req-1"]
    assert upstreams.operator_actions["req-1"].action == "retry"


async def test_a_signal_from_the_temporal_ui_is_audited_under_an_id_the_workflow_gives_it(
    start: Start, watch: Watch, upstreams: Upstreams
) -> None:
    upstreams.pay_methods.clear()
    handle = await start()
    await watch.parked(handle)
    upstreams.pay_methods[1] = ["BankAccount"]
    # What an operator types into "Send signal": a reason, nothing else.
    await handle.signal("retry", {"reason": "card added by phone"})
    assert (await handle.result()).status is FulfillmentStatus.ACTIVATED
    [(request_id, recorded)] = upstreams.operator_actions.items()
    assert request_id.startswith("signal-")
    assert (recorded.action, recorded.reason, recorded.requested_by) == (
        "retry",
        "card added by phone",
        "temporal-ui",
    )
    assert recorded.sf_order_id == ORDER_ID


async def test_decisions_sent_as_updates_are_left_to_their_sender_to_record(
    start: Start, watch: Watch, upstreams: Upstreams
) -> None:
    upstreams.pay_methods.clear()
    handle = await start()
    await watch.parked(handle)
    upstreams.pay_methods[1] = ["BankAccount"]
    await handle.execute_update(OrderFulfillment.retry_update, operator(request_id="api-1"))
    assert (await handle.result()).status is FulfillmentStatus.ACTIVATED
    assert upstreams.operator_actions == {}


# -- validators -----------------------------------------------------------------------------------


async def test_retry_and_cancel_are_refused_while_the_fulfillment_is_not_parked(
    start: Start, watch: Watch, upstreams: Upstreams
) -> None:
    upstreams.order = sim_order()
    upstreams.sim_outcome = SimPhase.IN_PROGRESS
    handle = await start(OPTIONS.model_copy(update={"sim_activation_deadline": timedelta(days=1)}))
    await watch.until(handle, lambda p: p.step is Step.PROVISION_SIMS)
    for update in (OrderFulfillment.retry_update, OrderFulfillment.cancel_update):
        with pytest.raises(WorkflowUpdateFailedError) as refused:
            await handle.execute_update(update, operator())
        assert "not waiting for an operator" in str(refused.value.cause)
    # A signal in the wrong state is ignored, not taken later.
    await handle.signal(OrderFulfillment.cancel_signal, operator())
    await handle.signal(
        OrderFulfillment.sim_activation_reported,
        SimActivation(phone_number=PHONE, phase=SimPhase.ACTIVE, state="active"),
    )
    assert (await handle.result()).status is FulfillmentStatus.ACTIVATED


async def test_a_retry_that_would_park_again_the_same_way_is_refused_saying_why(
    start: Start, watch: Watch, upstreams: Upstreams
) -> None:
    # Someone deleted the WHMCS order the run placed: accepting it can never succeed, and the
    # run keeps the order it placed, so a retry would only park again.
    gone = Failure(
        code=ErrorCode.BILLING_ORDER_REJECTED,
        kind=ErrorKind.BUSINESS,
        message="AcceptOrder refused: order 101 does not exist",
        retry_cannot_help="WHMCS order 101 no longer exists: cancel, then activate again",
    )
    upstreams.fail(
        Activity.ACCEPT_BILLING_ORDER,
        ApplicationError(
            gone.message, gone.model_dump(mode="json"), type=gone.code.value, non_retryable=True
        ),
    )
    handle = await start()
    parked = await watch.parked(handle)
    assert parked.step is Step.ACCEPT_BILLING_ORDER

    with pytest.raises(WorkflowUpdateFailedError) as refused:
        await handle.execute_update(OrderFulfillment.retry_update, operator())
    assert str(refused.value.cause).endswith(
        "cannot retry: WHMCS order 101 no longer exists: cancel, then activate again"
    )
    # The same retry sent as a signal (the Temporal UI, a re-activation) is ignored too.
    await handle.signal(OrderFulfillment.retry_signal, operator())
    assert (await progress(handle)).waiting_for_operator
    assert upstreams.calls[Activity.ACCEPT_BILLING_ORDER.value] == 1
    await handle.execute_update(OrderFulfillment.cancel_update, operator("order deleted"))
    assert (await handle.result()).status is FulfillmentStatus.CANCELLED


async def test_cancel_of_an_order_without_sims_parked_after_the_sim_step_undoes_its_billing(
    start: Start, watch: Watch, upstreams: Upstreams
) -> None:
    # An internet order passes the SIM step with nothing to do; compensation once took that
    # for a SIM request and failed the workflow task over and over.
    upstreams.fail(
        Activity.ACCEPT_BILLING_ORDER, business(ErrorCode.BILLING_ORDER_REJECTED, "refused")
    )
    handle = await start()
    assert (await watch.parked(handle)).step is Step.ACCEPT_BILLING_ORDER
    await handle.execute_update(OrderFulfillment.cancel_update, operator("customer withdrew"))
    result = await handle.result()
    assert (result.status, result.not_undone) == (FulfillmentStatus.CANCELLED, ())
    assert upstreams.whmcs_orders == {101: BillingOrderStatus.CANCELLED}


async def test_a_request_without_reason_is_refused_by_the_model(
    start: Start, upstreams: Upstreams
) -> None:
    with pytest.raises(ValueError):
        OperatorRequest(reason="", requested_by="ops")


# -- cancel and expiry ----------------------------------------------------------------------------


async def test_cancel_compensates_the_pending_billing_order_and_records_what_stays(
    start: Start, watch: Watch, upstreams: Upstreams
) -> None:
    upstreams.order = sim_order()
    upstreams.sim_outcome = SimPhase.FAILED
    handle = await start()
    await watch.parked(handle)
    await handle.execute_update(OrderFulfillment.cancel_update, operator("customer withdrew"))
    result = await handle.result()
    assert result.status is FulfillmentStatus.CANCELLED
    assert upstreams.whmcs_orders == {101: BillingOrderStatus.CANCELLED}
    assert result.error is not None and result.error.code is ErrorCode.SIM_PROVISIONING_FAILED
    assert any("Freebit line ending 5678" in item for item in result.not_undone)
    written = upstreams.salesforce_status
    assert written is not None and written.status is ActivationStatus.CANCELLED
    assert "customer withdrew" in (written.error_message or "")
    assert "Not undone: Freebit line ending 5678" in (written.error_message or "")
    assert upstreams.records[-1].status is FulfillmentStatus.CANCELLED


async def test_cancel_before_any_billing_order_has_nothing_to_undo(
    start: Start, watch: Watch, upstreams: Upstreams
) -> None:
    upstreams.pay_methods.clear()
    handle = await start()
    await watch.parked(handle)
    await handle.signal(OrderFulfillment.cancel_signal, operator())
    result = await handle.result()
    assert (result.status, result.not_undone) == (FulfillmentStatus.CANCELLED, ())
    assert upstreams.calls[Activity.CANCEL_BILLING_ORDER.value] == 0


async def test_the_operator_wait_expires_failed_with_the_code_kept(
    start: Start, upstreams: Upstreams
) -> None:
    upstreams.pay_methods.clear()
    handle = await start()
    result = await handle.result()  # the server skips the 14 days
    assert result.status is FulfillmentStatus.FAILED
    assert result.error is not None and result.error.code is ErrorCode.PAYMENT_METHOD_MISSING


async def test_the_operator_wait_expiring_undoes_a_billing_order_the_run_never_heard_of(
    start: Start, watch: Watch, upstreams: Upstreams
) -> None:
    # An earlier attempt's AddOrder committed, and every look since failed: the step parks
    # UPSTREAM_UNAVAILABLE knowing no WHMCS order. Nobody acts within the wait.
    upstreams.whmcs_markers["802000000000001AAA"] = 101
    upstreams.whmcs_orders[101] = BillingOrderStatus.PENDING
    upstreams.fail(Activity.CREATE_BILLING_ORDER, *(transient() for _ in range(200)))
    handle = await start(OPTIONS.model_copy(update={"retry_budget": timedelta(minutes=2)}))
    parked = await watch.parked(handle)
    assert parked.last_error is not None
    assert parked.last_error.code is ErrorCode.UPSTREAM_UNAVAILABLE
    result = await handle.result()  # the server skips the 14 days
    assert result.status is FulfillmentStatus.FAILED
    assert result.error is not None and result.error.code is ErrorCode.UPSTREAM_UNAVAILABLE
    assert upstreams.whmcs_orders == {101: BillingOrderStatus.CANCELLED}
    assert result.undone == ("WHMCS order 101 cancelled",)
    written = upstreams.salesforce_status
    assert written is not None
    assert (written.status, written.error_code) == (
        ActivationStatus.FAILED,
        ErrorCode.UPSTREAM_UNAVAILABLE,
    )
    message = written.error_message or ""
    assert "Nobody retried or cancelled within 14 days" in message
    assert "Undone: WHMCS order 101 cancelled" in message
    assert upstreams.records[-1].status is FulfillmentStatus.FAILED


async def cancelled_through_temporal(handle: WorkflowHandle[Any, FulfillmentResult]) -> None:
    """The Temporal UI's "Request cancellation", then the run's end: cancelled."""
    await handle.cancel()
    with pytest.raises(WorkflowFailureError) as ended:
        await handle.result()
    assert isinstance(ended.value.cause, CancelledError)


async def test_a_cancellation_request_while_parked_compensates_and_tells_salesforce(
    start: Start, watch: Watch, upstreams: Upstreams
) -> None:
    upstreams.order = sim_order()
    upstreams.sim_outcome = SimPhase.FAILED
    handle = await start()
    await watch.parked(handle)
    await cancelled_through_temporal(handle)
    assert upstreams.whmcs_orders == {101: BillingOrderStatus.CANCELLED}
    written = upstreams.salesforce_status
    assert written is not None and written.status is ActivationStatus.CANCELLED
    assert "cancellation requested through Temporal" in (written.error_message or "")
    assert "Undone: WHMCS order 101 cancelled" in (written.error_message or "")
    assert upstreams.records[-1].status is FulfillmentStatus.CANCELLED


async def test_a_cancellation_request_during_the_sim_wait_compensates(
    start: Start, watch: Watch, upstreams: Upstreams
) -> None:
    upstreams.order = sim_order()
    upstreams.sim_outcome = SimPhase.IN_PROGRESS
    handle = await start(OPTIONS.model_copy(update={"sim_activation_deadline": timedelta(days=1)}))
    await watch.until(handle, lambda p: p.step is Step.PROVISION_SIMS)
    await cancelled_through_temporal(handle)
    assert upstreams.whmcs_orders == {101: BillingOrderStatus.CANCELLED}
    written = upstreams.salesforce_status
    assert written is not None and written.status is ActivationStatus.CANCELLED
    assert "Freebit line ending 5678 may be registered" in (written.error_message or "")


async def test_a_cancellation_request_during_an_activity_is_not_taken_for_a_failure(
    start: Start, upstreams: Upstreams
) -> None:
    upstreams.hold_payment_check = True
    handle = await start()
    async with asyncio.timeout(30):
        await upstreams.held.wait()
    await cancelled_through_temporal(handle)
    # Not parked as UPSTREAM_UNAVAILABLE: straight to Cancelled, nothing billed to undo.
    assert [w.status for w in upstreams.status_writes] == [
        ActivationStatus.ACTIVATING,
        ActivationStatus.CANCELLED,
    ]
    assert upstreams.calls[Activity.CREATE_BILLING_ORDER.value] == 0
    assert upstreams.records[-1].status is FulfillmentStatus.CANCELLED


# -- exactly once ---------------------------------------------------------------------------------


async def test_a_billing_order_whose_reply_was_lost_after_commit_is_made_once(
    start: Start, upstreams: Upstreams
) -> None:
    upstreams.lose_add_order_replies = 1
    result = await (await start()).result()
    assert result.status is FulfillmentStatus.ACTIVATED
    assert upstreams.calls[Activity.CREATE_BILLING_ORDER.value] == 2
    assert upstreams.adds == 1
    assert list(upstreams.whmcs_orders) == [result.whmcs_order_id]


async def test_progress_tells_where_the_order_is(
    start: Start, watch: Watch, upstreams: Upstreams
) -> None:
    upstreams.order = sim_order()
    upstreams.sim_outcome = SimPhase.IN_PROGRESS
    handle = await start(OPTIONS.model_copy(update={"sim_activation_deadline": timedelta(days=1)}))
    seen = await watch.until(handle, lambda p: p.step is Step.PROVISION_SIMS)
    assert seen.status is FulfillmentStatus.ACTIVATING
    assert seen.steps_done == [
        Step.LOAD_ORDER,
        Step.MARK_ACTIVATING,
        Step.RESOLVE_BILLING_CLIENT,
        Step.VALIDATE_PAYMENT_METHOD,
        Step.CREATE_BILLING_ORDER,
    ]
    assert (seen.whmcs_client_id, seen.whmcs_order_id, seen.order_number) == (1, 101, "00000101")
    attributes = await search_attributes(handle)
    assert (attributes["FulfillmentStatus"], attributes["FulfillmentStep"]) == (
        "activating",
        "provision_sims",
    )
    await handle.signal(
        OrderFulfillment.sim_activation_reported,
        SimActivation(phone_number=PHONE, phase=SimPhase.ACTIVE, state="active"),
    )
    await handle.result()


def test_every_activity_the_workflow_schedules_has_its_own_timeout() -> None:
    from workflows.order_fulfillment import _START_TO_CLOSE

    local = {Activity.RECORD_FULFILLMENT, Activity.RECORD_OPERATOR_ACTION}
    assert set(_START_TO_CLOSE) == set(Activity) - local
