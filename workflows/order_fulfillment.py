"""The fulfillment workflow: one durable run per activated Salesforce order.

Orchestration only: the order of the steps (docs/design.md), the waits (Freebit's activation, an
operator's decision), compensation. Every decision about the order is a `domain.rules` function;
every outside call is an activity, referred to by name (`domain.steps.Activity`).

How failures are handled:
- a business error (a non-retryable `ApplicationError` whose type is an `ErrorCode`) parks the
  fulfillment: `Failed` + code + message are written to Salesforce, and the workflow waits
  (`options.operator_wait`, 14 days) for `retry` or `cancel`;
- transient errors are retried by Temporal with backoff for `options.retry_budget`; when the
  budget is spent the step parks as `UPSTREAM_UNAVAILABLE` the same way;
- `retry` resumes at the failed step, keeping what succeeded; steps that depend on the order's
  data re-read it first (an operator fixes data at its source, then retries);
- `cancel` undoes what can be undone, in reverse (a pending WHMCS order is cancelled), records
  what cannot (an active SIM line, an accepted WHMCS order) and ends `Cancelled`;
- the wait expiring ends the workflow `Failed`, the code kept.

Every write the steps make is safe to repeat (see the activities), so a step that is run again
after a worker crash or a lost reply has one effect.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any, Literal, TypeVar

from temporalio import workflow
from temporalio.common import (
    MetricCounter,
    RetryPolicy,
    SearchAttributeKey,
    SearchAttributeUpdate,
)
from temporalio.exceptions import ActivityError, ApplicationError, CancelledError, FailureError
from temporalio.workflow import ActivityCancellationType

with workflow.unsafe.imports_passed_through():
    from pydantic import BaseModel

    from domain.billing import BillingOrderResult, BillingOrderStatus
    from domain.errors import ErrorCode, ErrorKind, Failure, OrderRejected
    from domain.fulfillment import (
        WORKFLOW_TYPE,
        FulfillmentInput,
        FulfillmentProgress,
        FulfillmentResult,
        FulfillmentStatus,
        OperatorRequest,
        SearchAttribute,
        Step,
        read_model_version,
        workflow_id,
    )
    from domain.messages import (
        CANCEL_SIGNAL,
        CANCEL_UPDATE,
        PROGRESS_QUERY,
        RETRY_SIGNAL,
        RETRY_UPDATE,
        SIM_ACTIVATION_REPORTED_SIGNAL,
    )
    from domain.order import ActivationStatus, OrderSnapshot
    from domain.rules import billing_order, check_fulfillable, sim_request
    from domain.sim import SimActivation, SimPhase, SimRequest
    from domain.steps import (
        Activity,
        BillingClientQuery,
        BillingClientRef,
        BillingOrderRef,
        CacheInvalidated,
        CacheInvalidation,
        FoundBillingOrder,
        FulfillmentRecord,
        LoadedOrder,
        MarkActivating,
        OperatorAction,
        OrderRef,
        PaymentCheck,
        SimLine,
        SimLineQuery,
        StatusWriteBack,
        SuccessWriteBack,
        Written,
    )

SALESFORCE_ORDER_ID = SearchAttributeKey.for_keyword(SearchAttribute.SALESFORCE_ORDER_ID)
SALESFORCE_ACCOUNT_ID = SearchAttributeKey.for_keyword(SearchAttribute.SALESFORCE_ACCOUNT_ID)
FULFILLMENT_STATUS = SearchAttributeKey.for_keyword(SearchAttribute.FULFILLMENT_STATUS)
FULFILLMENT_STEP = SearchAttributeKey.for_keyword(SearchAttribute.FULFILLMENT_STEP)
FULFILLMENT_ERROR_CODE = SearchAttributeKey.for_keyword(SearchAttribute.FULFILLMENT_ERROR_CODE)
SEARCH_ATTRIBUTES = (
    SALESFORCE_ORDER_ID,
    SALESFORCE_ACCOUNT_ID,
    FULFILLMENT_STATUS,
    FULFILLMENT_STEP,
    FULFILLMENT_ERROR_CODE,
)

# Steps whose retry re-reads the order first: what they do depends on the order's data.
_RELOAD_ON_RETRY = frozenset(
    {Step.LOAD_ORDER, Step.RESOLVE_BILLING_CLIENT, Step.CREATE_BILLING_ORDER, Step.PROVISION_SIMS}
)
_STEP_SUMMARIES = {
    Step.LOAD_ORDER: "read the order from Salesforce",
    Step.MARK_ACTIVATING: "mark the order Activating in Salesforce",
    Step.RESOLVE_BILLING_CLIENT: "find the customer's WHMCS client",
    Step.VALIDATE_PAYMENT_METHOD: "check the WHMCS payment method",
    Step.CREATE_BILLING_ORDER: "create the WHMCS order",
    Step.PROVISION_SIMS: "register and activate the SIM at Freebit",
    Step.ACCEPT_BILLING_ORDER: "accept the WHMCS order",
    Step.WRITE_BACK_SUCCESS: "write Activated and the WHMCS ids to Salesforce",
    Step.INVALIDATE_CACHES: "invalidate the portal's caches",
}
# How long one attempt of each activity may run: the client's own deadline times its in-client
# tries (reads are tried 3 times, each up to its 30 s timeout; writes once), plus what the step
# adds (a write-back repeated after a failure first waits up to SF_SETTLE_SECONDS, 120 s; billing
# may wait 30 s for its lock and read several pages). Generous on purpose: a worker that dies is
# found by the heartbeat timeout, in seconds, not by these.
_START_TO_CLOSE = {
    Activity.LOAD_ORDER: timedelta(minutes=2),
    Activity.LOAD_ORDER_AND_MARK_ACTIVATING: timedelta(minutes=5),
    Activity.WRITE_BACK_STATUS: timedelta(minutes=5),
    Activity.WRITE_BACK_SUCCESS: timedelta(minutes=5),
    Activity.RESOLVE_BILLING_CLIENT: timedelta(minutes=2),
    Activity.VALIDATE_PAYMENT_METHOD: timedelta(minutes=2),
    Activity.CREATE_BILLING_ORDER: timedelta(minutes=5),
    Activity.ACCEPT_BILLING_ORDER: timedelta(minutes=3),
    Activity.CANCEL_BILLING_ORDER: timedelta(minutes=3),
    Activity.FIND_BILLING_ORDER: timedelta(minutes=3),
    Activity.REGISTER_SIM: timedelta(minutes=3),
    Activity.CHECK_SIM: timedelta(minutes=2),
    Activity.INVALIDATE_CACHES: timedelta(minutes=1),
}
# Every activity heartbeats (a third of this apart) while it runs, so an attempt whose worker
# died is retried this long after its last beat.
_HEARTBEAT_TIMEOUT = timedelta(seconds=10)
# The read-model write and the search-attribute changes are made once, with the state as it is,
# when the workflow next calls out or waits, rather than at every change (each upsert is an event
# and a visibility write on the server, each write a local activity; only the last of several in
# a row was ever seen). Runs started before this patch made each at once, and replay that way.
_COALESCE_WRITES = "coalesce-writes"
# Operator cancel, a cancellation request through Temporal and the operator-wait expiry all run
# one compensation, which looks for the WHMCS order when the run does not know it; runs started
# before this patch compensated on operator cancel only, from what they knew.
_COMPENSATE_ALWAYS = "compensate-however-it-ends"
# Retry and cancel taken from a signal are recorded in operator_actions by the workflow (a signal
# without a request id gets one); runs started before this patch recorded none.
_AUDIT_SIGNALS = "audit-signal-decisions"
# A retry clears FulfillmentErrorCode at once (runs before this patch kept it until the end).
_RETRY_CLEARS_ERROR_CODE = "retry-clears-error-code"
# The order is read and marked Activating in one Salesforce call (one Composite request, one
# call against the org's daily API allowance); the mark_activating step then only takes what
# that call did. Runs before this patch read with load_order and wrote Activating at
# mark_activating, two calls. An order that then fails its checks was marked Activating and
# is moved on to Failed by the park's write-back, as one failing at a later step always was.
_LOAD_AND_MARK = "load-and-mark-activating"
# Search attributes change where a run dwells, not at every step: FulfillmentStep is set at the
# steps that can take minutes (a SIM line activating), where the run parks, and where it ends;
# a run starts with SalesforceOrderId and FulfillmentStatus already set by its starter
# (`usecases.fulfillments.start_fulfillment`). Each upsert is an event and a visibility write on
# the server, about a fifth of an order's cost there; every saved view of docs/observability.md
# asks only for what is still set. Runs before this patch upserted the step at every step.
_ATTRIBUTES_WHERE_IT_DWELLS = "search-attributes-where-it-dwells"
# Steps a run can spend minutes in: FulfillmentStep names them while it does.
_DWELL_STEPS = frozenset({Step.PROVISION_SIMS})

M = TypeVar("M", bound=BaseModel)
Decision = Literal["retry", "cancel"]


class _Parked(Exception):
    """A step failed for good (business error, or retry budget spent)."""

    def __init__(self, step: Step, failure: Failure) -> None:
        super().__init__(failure.summary())
        self.step = step
        self.failure = failure


# Under Worker Versioning it auto-upgrades (the worker's default, workers/versioning.py; a
# behavior given here would be sent by unversioned workers too, which the server refuses).
@workflow.defn(name=WORKFLOW_TYPE)
class OrderFulfillment:
    @workflow.init
    def __init__(self, input: FulfillmentInput) -> None:
        self._input = input
        self._options = input.options
        self._progress = FulfillmentProgress(sf_order_id=input.sf_order_id)
        self._done: set[Step] = set()
        self._order: OrderSnapshot | None = None
        self._gateway: str | None = None
        self._billing: BillingOrderResult | None = None
        self._sim: SimRequest | None = None
        self._reported: SimActivation | None = None
        self._decision: tuple[Decision, OperatorRequest] | None = None
        self._handled_requests: set[str] = set()
        self._writes = 0
        self._attempted_at: datetime | None = None
        self._load_and_mark = False
        self._lean_attributes = False
        # What the last load's Activating write did, for the mark_activating step to take.
        self._marked: LoadedOrder | None = None
        self._parked_until: datetime | None = None
        self._coalesce_writes = False
        self._audit_signals = False
        self._compensate_always = False
        self._billing_attempted = False
        self._signalled_request: str | None = None
        self._pending_attributes: dict[str, SearchAttributeUpdate[Any]] = {}
        self._record_due = False

    # -- the run -------------------------------------------------------------------------------

    @workflow.run
    async def run(self, input: FulfillmentInput) -> FulfillmentResult:
        self._coalesce_writes = workflow.patched(_COALESCE_WRITES)
        self._audit_signals = workflow.patched(_AUDIT_SIGNALS)
        self._compensate_always = workflow.patched(_COMPENSATE_ALWAYS)
        self._load_and_mark = workflow.patched(_LOAD_AND_MARK)
        self._lean_attributes = workflow.patched(_ATTRIBUTES_WHERE_IT_DWELLS)
        try:
            result = await self._fulfil(input)
        except asyncio.CancelledError:
            if not self._compensate_always:
                raise
            # Shielded: a second request must not cut the compensation short.
            await asyncio.shield(asyncio.ensure_future(self._cancelled_by_request()))
            raise
        await self._flush()
        return result

    async def _fulfil(self, input: FulfillmentInput) -> FulfillmentResult:
        _metric_counter("fulfillment_started", "Fulfillments started").add(1)
        self._upsert_attributes(SALESFORCE_ORDER_ID.value_set(input.sf_order_id))
        self._set_status(FulfillmentStatus.PENDING)
        if self._lean_attributes:
            self._drop_set_at_start()
        reload = False
        while True:
            try:
                await self._run_steps(reload=reload)
                return await self._succeeded()
            except _Parked as parked:
                decision = await self._park(parked)
            if decision is None:
                return await self._expired()
            action, request = decision
            if request.request_id is not None and request.request_id == self._signalled_request:
                await self._audit(action, request)
            if action == "cancel":
                return await self._cancel(request)
            self._resume(request)
            reload = self._progress.step in _RELOAD_ON_RETRY

    async def _run_steps(self, *, reload: bool) -> None:
        if reload and Step.LOAD_ORDER in self._done:
            await self._load_order()
        for step in Step:
            if step in self._done:
                continue
            await self._at(step)
            started = workflow.now()
            await self._run_step(step)
            workflow.metric_meter().create_histogram_timedelta(
                "fulfillment_step_duration", "Time a fulfillment step took", "duration"
            ).record(workflow.now() - started, {"step": step.value})
            self._done.add(step)
            self._progress.steps_done = [s for s in Step if s in self._done]

    async def _run_step(self, step: Step) -> None:
        if step is Step.LOAD_ORDER:
            await self._load_order()
        elif step is Step.MARK_ACTIVATING:
            await self._mark_activating()
        elif step is Step.RESOLVE_BILLING_CLIENT:
            await self._resolve_billing_client()
        elif step is Step.VALIDATE_PAYMENT_METHOD:
            await self._validate_payment_method()
        elif step is Step.CREATE_BILLING_ORDER:
            await self._create_billing_order()
        elif step is Step.PROVISION_SIMS:
            await self._provision_sims()
        elif step is Step.ACCEPT_BILLING_ORDER:
            await self._accept_billing_order()
        elif step is Step.WRITE_BACK_SUCCESS:
            await self._write_back_success()
        elif step is Step.INVALIDATE_CACHES:
            # The read model says Activated before the portal's caches go: a portal read after
            # the invalidation can only fill them with the final state.
            await self._mark_activated()
            await self._invalidate(success=True)

    # -- the steps -----------------------------------------------------------------------------

    async def _load_order(self) -> None:
        self._marked = None
        loaded: LoadedOrder | None = None
        if self._load_and_mark and Step.MARK_ACTIVATING not in self._done:
            # The attempt starts here: its Activating write goes out with the read.
            self._attempted_at = workflow.now()
            loaded = await self._call(
                Step.LOAD_ORDER,
                Activity.LOAD_ORDER_AND_MARK_ACTIVATING,
                MarkActivating(
                    sf_order_id=self._input.sf_order_id, attempted_at=self._attempted_at
                ),
                LoadedOrder,
            )
            order = loaded.order
        else:
            order = await self._call(
                Step.LOAD_ORDER,
                Activity.LOAD_ORDER,
                OrderRef(sf_order_id=self._input.sf_order_id),
                OrderSnapshot,
            )
        self._order = order
        self._progress.sf_account_id = order.sf_account_id
        self._progress.order_number = order.order_number
        if order.sf_account_id:
            self._upsert_attributes(SALESFORCE_ACCOUNT_ID.value_set(order.sf_account_id))
        try:
            check_fulfillable(order, today=workflow.now().date())
        except OrderRejected as rejected:
            raise _Parked(Step.LOAD_ORDER, rejected.to_failure()) from None
        self._sim = sim_request(order)
        self._marked = loaded

    async def _mark_activating(self) -> None:
        marked, self._marked = self._marked, None
        if marked is not None:
            # Written with the read (or refused there): nothing more to send.
            self._set_status(FulfillmentStatus.ACTIVATING)
            if marked.refused is not None:
                raise _Parked(Step.MARK_ACTIVATING, marked.refused)
            await self._record()
            return
        self._attempted_at = workflow.now()
        self._set_status(FulfillmentStatus.ACTIVATING)
        await self._write_status(Step.MARK_ACTIVATING, ActivationStatus.ACTIVATING)
        await self._record()

    async def _resolve_billing_client(self) -> None:
        order = self._loaded()
        ref = await self._call(
            Step.RESOLVE_BILLING_CLIENT,
            Activity.RESOLVE_BILLING_CLIENT,
            BillingClientQuery(sf_account_id=order.sf_account_id or "", account=order.account),
            BillingClientRef,
        )
        self._progress.whmcs_client_id = ref.whmcs_client_id

    async def _validate_payment_method(self) -> None:
        check = await self._call(
            Step.VALIDATE_PAYMENT_METHOD,
            Activity.VALIDATE_PAYMENT_METHOD,
            BillingClientRef(whmcs_client_id=self._client_id()),
            PaymentCheck,
        )
        self._gateway = check.gateway

    async def _create_billing_order(self) -> None:
        try:
            request = billing_order(self._loaded(), self._client_id(), self._gateway or "")
        except OrderRejected as rejected:
            raise _Parked(Step.CREATE_BILLING_ORDER, rejected.to_failure()) from None
        if self._billing_attempted:
            request = request.model_copy(update={"earlier_attempt": True})
        self._billing_attempted = True
        result = await self._call(
            Step.CREATE_BILLING_ORDER,
            Activity.CREATE_BILLING_ORDER,
            request,
            BillingOrderResult,
        )
        self._billing = result
        self._progress.whmcs_order_id = result.whmcs_order_id
        self._progress.whmcs_invoice_id = result.whmcs_invoice_id
        self._progress.whmcs_service_ids = dict(result.service_ids)
        await self._record()

    async def _provision_sims(self) -> None:
        request = self._sim
        if request is None:
            return
        await self._call(Step.PROVISION_SIMS, Activity.REGISTER_SIM, request, Written)
        line = await self._await_activation(request)
        self._progress.sims = [line]

    async def _await_activation(self, request: SimRequest) -> SimActivation:
        """Poll the line with durable timers and backoff (no activity slot held while waiting),
        until it is active, failed, reported by a signal, or the deadline passes."""
        deadline = workflow.now() + self._options.sim_activation_deadline
        delay = self._options.sim_poll_first
        while True:
            line = self._take_report(request)
            if line is None:
                found = await self._call(
                    Step.PROVISION_SIMS,
                    Activity.CHECK_SIM,
                    SimLineQuery(phone_number=request.phone_number),
                    SimLine,
                )
                line = found.line
            if line is not None and line.phase is SimPhase.ACTIVE:
                return line
            if line is not None and line.phase is SimPhase.FAILED:
                raise _Parked(
                    Step.PROVISION_SIMS,
                    Failure(
                        code=ErrorCode.SIM_PROVISIONING_FAILED,
                        kind=ErrorKind.BUSINESS,
                        message="Freebit could not activate the line",
                        detail=line.fail_reason or line.state,
                    ),
                )
            remaining = deadline - workflow.now()
            if remaining <= timedelta(0):
                state = line.state if line is not None else "not found"
                raise _Parked(
                    Step.PROVISION_SIMS,
                    Failure(
                        code=ErrorCode.SIM_PROVISIONING_TIMEOUT,
                        kind=ErrorKind.BUSINESS,
                        message=(
                            "the line was not active within "
                            f"{_duration(self._options.sim_activation_deadline)}"
                        ),
                        detail=f"last state: {state}",
                    ),
                )
            await self._flush()
            with contextlib.suppress(TimeoutError):
                await workflow.wait_condition(
                    lambda: self._reported is not None, timeout=min(delay, remaining)
                )
            delay = min(delay * 2, self._options.sim_poll_max)

    def _take_report(self, request: SimRequest) -> SimActivation | None:
        report, self._reported = self._reported, None
        if report is None or report.phone_number != request.phone_number:
            return None
        return report

    async def _accept_billing_order(self) -> None:
        billing = self._billing_result()
        await self._call(
            Step.ACCEPT_BILLING_ORDER,
            Activity.ACCEPT_BILLING_ORDER,
            BillingOrderRef(whmcs_order_id=billing.whmcs_order_id),
            Written,
        )
        self._billing = billing.model_copy(update={"status": BillingOrderStatus.ACTIVE})

    async def _write_back_success(self) -> None:
        billing = self._billing_result()
        await self._call(
            Step.WRITE_BACK_SUCCESS,
            Activity.WRITE_BACK_SUCCESS,
            SuccessWriteBack(
                sf_order_id=self._input.sf_order_id,
                attempted_at=self._attempted_at or workflow.now(),
                whmcs_order_id=billing.whmcs_order_id,
                service_ids=dict(billing.service_ids),
            ),
            Written,
        )

    async def _invalidate(self, *, success: bool) -> None:
        """Drop the portal's cached views of this order (and, on success, of the WHMCS client).

        Best effort after a failure or a cancel: the activity keeps what Redis refused in the
        outbox, so a failure here is logged, never turned into a parked order.
        """
        request = CacheInvalidation(
            sf_order_id=self._input.sf_order_id,
            sf_account_id=self._progress.sf_account_id,
            whmcs_client_id=self._progress.whmcs_client_id if success else None,
            reason="fulfilled" if success else "fulfillment state changed",
        )
        if success:
            await self._call(
                Step.INVALIDATE_CACHES, Activity.INVALIDATE_CACHES, request, CacheInvalidated
            )
            return
        try:
            await self._call(
                Step.INVALIDATE_CACHES, Activity.INVALIDATE_CACHES, request, CacheInvalidated
            )
        except _Parked as failed:
            workflow.logger.warning("cache invalidation failed: %s", failed.failure.summary())

    # -- endings -------------------------------------------------------------------------------

    async def _mark_activated(self) -> None:
        self._progress.last_error = None
        self._set_status(FulfillmentStatus.ACTIVATED)
        self._upsert_attributes(FULFILLMENT_ERROR_CODE.value_unset())
        if self._lean_attributes and self._progress.step is not None:
            self._upsert_attributes(FULFILLMENT_STEP.value_set(self._progress.step.value))
        await self._record()

    async def _succeeded(self) -> FulfillmentResult:
        self._progress.step = None
        billing = self._billing_result()
        _completed(FulfillmentStatus.ACTIVATED)
        workflow.set_current_details(
            f"Activated. {self._order_label()}: WHMCS order {billing.whmcs_order_id}, "
            f"services {', '.join(str(s) for s in billing.service_ids.values()) or 'none'}."
        )
        return FulfillmentResult(
            sf_order_id=self._input.sf_order_id,
            status=FulfillmentStatus.ACTIVATED,
            whmcs_order_id=billing.whmcs_order_id,
            whmcs_service_ids=dict(billing.service_ids),
        )

    async def _park(self, parked: _Parked) -> tuple[Decision, OperatorRequest] | None:
        """Record the failure everywhere, then wait for an operator (or the wait to expire)."""
        failure = parked.failure
        self._progress.step = parked.step
        self._progress.last_error = failure
        self._set_status(FulfillmentStatus.FAILED)
        self._upsert_attributes(FULFILLMENT_ERROR_CODE.value_set(failure.code.value))
        if self._lean_attributes:
            self._upsert_attributes(FULFILLMENT_STEP.value_set(parked.step.value))
        workflow.logger.info("parked at %s: %s", parked.step.value, failure.code.value)
        _metric_counter("fulfillment_parked", "Fulfillments parked for an operator").add(
            1, {"code": failure.code.value, "step": parked.step.value}
        )
        try:
            await self._write_status(
                parked.step,
                ActivationStatus.FAILED,
                error_code=failure.code,
                error_message=failure.summary(),
            )
        except _Parked as unwritable:
            # Salesforce itself is what failed: the read model and the UI still show the state.
            workflow.logger.warning("could not write Failed: %s", unwritable.failure.summary())
        await self._record()
        await self._invalidate(success=False)
        self._decision = None
        self._parked_until = workflow.now() + self._options.operator_wait
        self._progress.waiting_for_operator = True
        workflow.set_current_details(self._parked_details())
        await self._flush()
        try:
            await workflow.wait_condition(
                lambda: self._decision is not None, timeout=self._options.operator_wait
            )
        except TimeoutError:
            return None
        finally:
            self._progress.waiting_for_operator = False
        return self._decision

    def _resume(self, request: OperatorRequest) -> None:
        _metric_counter("fulfillment_retries", "Operator retries of parked fulfillments").add(1)
        self._progress.last_error = None
        if workflow.patched(_RETRY_CLEARS_ERROR_CODE):
            # A search for parked orders by code must not list one an operator resumed.
            self._upsert_attributes(FULFILLMENT_ERROR_CODE.value_unset())
        # Salesforce shows Failed now: the next attempt marks the order Activating again.
        self._done.discard(Step.MARK_ACTIVATING)
        workflow.logger.info("retry requested by %s", request.requested_by)
        workflow.set_current_details(
            f"{self._order_label()}: retry {self._progress.attempt - 1} requested by "
            f"{request.requested_by} ({request.reason}); resuming at "
            f"{self._progress.step.value if self._progress.step else 'the start'}."
        )

    async def _expired(self) -> FulfillmentResult:
        failure = self._progress.last_error
        wait = _duration(self._options.operator_wait)
        if not self._compensate_always:
            _completed(FulfillmentStatus.FAILED)
            workflow.set_current_details(
                f"Failed: nobody retried or cancelled within {wait}. "
                f"{failure.summary() if failure else ''}"
            )
            return self._result(FulfillmentStatus.FAILED)
        undone, not_undone = await self._undo()
        message = f"Nobody retried or cancelled within {wait}: given up" + _undo_report(
            undone, not_undone
        )
        if failure is not None:
            message += f" The failure: {failure.summary()}"
        return await self._end(FulfillmentStatus.FAILED, message, undone, not_undone)

    async def _cancel(self, request: OperatorRequest) -> FulfillmentResult:
        """Undo in reverse what can be undone; record what cannot; end Cancelled."""
        undone, not_undone = await self._undo()
        if self._compensate_always:
            message = f"Cancelled by {request.requested_by}: {request.reason}" + _undo_report(
                undone, not_undone
            )
        else:
            message = f"Cancelled by {request.requested_by}: {request.reason}"
            if not_undone:
                message += ". Not undone: " + "; ".join(not_undone)
        return await self._end(FulfillmentStatus.CANCELLED, message, undone, not_undone)

    async def _cancelled_by_request(self) -> None:
        """Temporal was asked to cancel the run (the UI's "Request cancellation"): the same
        compensation as an operator's cancel, then the run ends cancelled."""
        workflow.logger.info("cancellation requested: compensating")
        await self._cancel(
            OperatorRequest(
                reason="cancellation requested through Temporal", requested_by="temporal"
            )
        )

    async def _undo(self) -> tuple[list[str], list[str]]:
        """Undo in reverse what can be undone: (what was undone, what was not and why)."""
        undone: list[str] = []
        not_undone: list[str] = []
        if self._progress.sims:
            for line in self._progress.sims:
                not_undone.append(
                    f"Freebit line ending {line.phone_number[-4:]} is {line.state}: "
                    "terminate it at Freebit if it must not stay"
                )
        elif self._sim is not None and (
            Step.PROVISION_SIMS in self._progress.steps_done
            or self._progress.step is Step.PROVISION_SIMS
        ):
            # An order without a SIM passes the step too: only a SIM request may have a line.
            not_undone.append(
                f"Freebit line ending {self._sim.phone_number[-4:]} may be registered: "
                "check it at Freebit"
            )
        billing = self._billing
        if billing is None and self._compensate_always and self._billing_attempted:
            # The run does not know its WHMCS order (AddOrder's outcome was unknown when the
            # step parked, or the request came in the middle of it): look for it.
            try:
                found = await self._call(
                    Step.CREATE_BILLING_ORDER,
                    Activity.FIND_BILLING_ORDER,
                    billing_order(self._loaded(), self._client_id(), self._gateway or ""),
                    FoundBillingOrder,
                )
                billing = found.order
            except _Parked as unknown:
                not_undone.append(
                    "a WHMCS order may have been made and could not be looked for: "
                    f"{unknown.failure.summary()}; look for the order's items in WHMCS"
                )
        if billing is not None:
            if billing.status is BillingOrderStatus.ACTIVE:
                not_undone.append(
                    f"WHMCS order {billing.whmcs_order_id} is accepted: cancel its services "
                    "in WHMCS"
                )
            else:
                try:
                    await self._call(
                        Step.CREATE_BILLING_ORDER,
                        Activity.CANCEL_BILLING_ORDER,
                        BillingOrderRef(whmcs_order_id=billing.whmcs_order_id),
                        Written,
                    )
                    undone.append(f"WHMCS order {billing.whmcs_order_id} cancelled")
                except _Parked as refused:
                    not_undone.append(
                        f"WHMCS order {billing.whmcs_order_id} could not be cancelled: "
                        f"{refused.failure.summary()}"
                    )
        return undone, not_undone

    async def _end(
        self,
        status: FulfillmentStatus,
        message: str,
        undone: list[str],
        not_undone: list[str],
    ) -> FulfillmentResult:
        """Write how the fulfillment ended (Salesforce, read model, caches) and say so."""
        failure = self._progress.last_error
        self._set_status(status)
        try:
            await self._write_status(
                self._progress.step or Step.LOAD_ORDER,
                ActivationStatus.CANCELLED
                if status is FulfillmentStatus.CANCELLED
                else ActivationStatus.FAILED,
                error_code=failure.code if failure else None,
                error_message=message,
            )
        except _Parked as unwritable:
            not_undone.append(f"Salesforce was not told: {unwritable.failure.summary()}")
        await self._record()
        await self._invalidate(success=False)
        _completed(status)
        workflow.set_current_details(message)
        return self._result(status, undone, not_undone)

    def _result(
        self,
        status: FulfillmentStatus,
        undone: Sequence[str] = (),
        not_undone: Sequence[str] = (),
    ) -> FulfillmentResult:
        """The result of a run that did not end Activated: its failure and what it billed."""
        return FulfillmentResult(
            sf_order_id=self._input.sf_order_id,
            status=status,
            error=self._progress.last_error,
            whmcs_order_id=self._progress.whmcs_order_id,
            whmcs_service_ids=dict(self._progress.whmcs_service_ids),
            undone=tuple(undone),
            not_undone=tuple(not_undone),
        )

    # -- operator interface --------------------------------------------------------------------

    @workflow.query(name=PROGRESS_QUERY)
    def progress(self) -> FulfillmentProgress:
        return self._progress

    @workflow.update(name=RETRY_UPDATE)
    def retry_update(self, request: OperatorRequest) -> FulfillmentProgress:
        self._decide("retry", request)
        return self._progress

    @retry_update.validator
    def _validate_retry(self, request: OperatorRequest) -> None:
        self._validate("retry", request)

    @workflow.update(name=CANCEL_UPDATE)
    def cancel_update(self, request: OperatorRequest) -> FulfillmentProgress:
        self._decide("cancel", request)
        return self._progress

    @cancel_update.validator
    def _validate_cancel(self, request: OperatorRequest) -> None:
        self._validate("cancel", request)

    # Signals of the same names, so the Temporal UI's "send signal" works too. A signal cannot
    # be refused, so one in the wrong state is logged and ignored.
    @workflow.signal(name=RETRY_SIGNAL)
    def retry_signal(self, request: OperatorRequest) -> None:
        self._signalled("retry", request)

    @workflow.signal(name=CANCEL_SIGNAL)
    def cancel_signal(self, request: OperatorRequest) -> None:
        self._signalled("cancel", request)

    @workflow.signal(name=SIM_ACTIVATION_REPORTED_SIGNAL)
    def sim_activation_reported(self, report: SimActivation) -> None:
        """Freebit reported the line's outcome through another channel (its notification
        files): the activation wait ends without waiting for the next poll."""
        self._reported = report

    def _validate(self, action: Decision, request: OperatorRequest) -> None:
        if request.request_id is not None and request.request_id in self._handled_requests:
            return
        if not self._progress.waiting_for_operator or self._decision is not None:
            raise ValueError(
                f"cannot {action}: the fulfillment is {self._progress.status.value}"
                + (f" at {self._progress.step.value}" if self._progress.step else "")
                + ", not waiting for an operator"
            )
        failure = self._progress.last_error
        if action == "retry" and failure is not None and failure.retry_cannot_help:
            # Accepted, it would resume at the same step and park again the same way.
            raise ValueError(f"cannot retry: {failure.retry_cannot_help}")

    def _signalled(self, action: Decision, request: OperatorRequest) -> None:
        try:
            self._validate(action, request)
        except ValueError as refused:
            workflow.logger.warning("%s signal ignored: %s", action, refused)
            return
        if self._audit_signals and request.request_id is None:
            # A signal typed into the Temporal UI names no request: the workflow names it,
            # deterministically, so its audit row is written once however often it replays.
            request = request.model_copy(update={"request_id": f"signal-{workflow.uuid4()}"})
        if self._audit_signals and request.request_id not in self._handled_requests:
            self._signalled_request = request.request_id
        self._decide(action, request)

    def _decide(self, action: Decision, request: OperatorRequest) -> None:
        if request.request_id is not None:
            if request.request_id in self._handled_requests:
                return
            self._handled_requests.add(request.request_id)
        self._decision = (action, request)
        # Taken at once, so the update's answer (and any query after it) shows it.
        self._progress.waiting_for_operator = False
        if action == "retry":
            self._progress.attempt += 1

    # -- plumbing ------------------------------------------------------------------------------

    async def _call(
        self,
        step: Step,
        activity: Activity,
        arg: BaseModel,
        result_type: type[M],
    ) -> M:
        """Run one activity; a business error or a spent retry budget becomes `_Parked`."""
        await self._flush()
        try:
            result: M = await workflow.execute_activity(
                activity.value,
                arg,
                result_type=result_type,
                start_to_close_timeout=_START_TO_CLOSE[activity],
                heartbeat_timeout=_HEARTBEAT_TIMEOUT,
                # On a cancellation request, compensation starts once the activity has stopped
                # (it hears of the request at its next heartbeat): a lookup for the WHMCS order
                # must not race an AddOrder still in flight.
                cancellation_type=ActivityCancellationType.WAIT_CANCELLATION_COMPLETED,
                schedule_to_close_timeout=self._options.retry_budget,
                retry_policy=RetryPolicy(
                    initial_interval=timedelta(seconds=2),
                    backoff_coefficient=2.0,
                    maximum_interval=timedelta(minutes=5),
                ),
                summary=f"{step.value}: {_STEP_SUMMARIES[step]}",
            )
        except ActivityError as failed:
            if self._compensate_always and isinstance(failed.cause, CancelledError):
                # The run was asked to cancel while the activity ran: not a failure to park.
                raise asyncio.CancelledError() from failed
            raise _Parked(step, _failure_of(failed, self._options.retry_budget)) from None
        return result

    async def _write_status(
        self,
        step: Step,
        status: ActivationStatus,
        *,
        error_code: ErrorCode | None = None,
        error_message: str | None = None,
    ) -> None:
        await self._call(
            step,
            Activity.WRITE_BACK_STATUS,
            StatusWriteBack(
                sf_order_id=self._input.sf_order_id,
                status=status,
                attempted_at=self._attempted_at or workflow.now(),
                error_code=error_code,
                error_message=error_message,
            ),
            Written,
        )

    async def _record(self) -> None:
        """Write the read model: when the workflow next calls out or waits (`_flush`)."""
        if self._coalesce_writes:
            self._record_due = True
            return
        await self._write_record()

    async def _flush(self) -> None:
        """Before the workflow calls out or waits: the read-model write and the search-attribute
        changes due since it last did, each once, with the state as it is now."""
        if self._record_due:
            self._record_due = False
            await self._write_record()
        if self._pending_attributes:
            workflow.upsert_search_attributes(list(self._pending_attributes.values()))
            self._pending_attributes.clear()

    async def _audit(self, action: Decision, request: OperatorRequest) -> None:
        """The row in `operator_actions` for a decision taken from a signal (the API and the CLI
        record theirs before sending an update); keyed on the request id, so written once."""
        assert request.request_id is not None
        try:
            await workflow.execute_local_activity(
                Activity.RECORD_OPERATOR_ACTION.value,
                OperatorAction(
                    request_id=request.request_id,
                    sf_order_id=self._input.sf_order_id,
                    action=action,
                    reason=request.reason,
                    requested_by=request.requested_by,
                ),
                result_type=Written,
                start_to_close_timeout=timedelta(seconds=10),
                schedule_to_close_timeout=timedelta(minutes=5),
                retry_policy=RetryPolicy(maximum_interval=timedelta(seconds=30)),
                summary=f"record the {action} signal in operator_actions",
            )
        except ActivityError as failed:
            workflow.logger.warning("operator action not recorded: %s", failed)

    async def _write_record(self) -> None:
        """Write the read model (a local activity: cheap, and newer versions always win)."""
        self._writes += 1
        error = self._progress.last_error
        billing = self._billing
        record = FulfillmentRecord(
            sf_order_id=self._input.sf_order_id,
            sf_account_id=self._progress.sf_account_id,
            workflow_id=workflow_id(self._input.sf_order_id),
            status=self._progress.status,
            step=self._progress.step,
            error_code=error.code if error else None,
            error_message=error.summary() if error else None,
            whmcs_order_id=billing.whmcs_order_id if billing else None,
            whmcs_invoice_id=billing.whmcs_invoice_id if billing else None,
            whmcs_service_ids=tuple(billing.service_ids.values()) if billing else (),
            attempts=self._progress.attempt,
            version=read_model_version(workflow.now(), self._writes),
        )
        try:
            await workflow.execute_local_activity(
                Activity.RECORD_FULFILLMENT.value,
                record,
                result_type=Written,
                start_to_close_timeout=timedelta(seconds=10),
                schedule_to_close_timeout=timedelta(minutes=5),
                retry_policy=RetryPolicy(maximum_interval=timedelta(seconds=30)),
                summary="record the fulfillment in the read model",
            )
        except ActivityError as failed:
            # The read model trails; the workflow's own state (and the UI) stay right.
            workflow.logger.warning("read model not updated: %s", failed)

    async def _at(self, step: Step) -> None:
        self._progress.step = step
        # An order without SIMs passes provision_sims at once: it never dwells there.
        dwells = step in _DWELL_STEPS and self._sim is not None
        if not self._lean_attributes or dwells:
            self._upsert_attributes(FULFILLMENT_STEP.value_set(step.value))
        workflow.set_current_details(
            f"{self._order_label()}: {_STEP_SUMMARIES[step]} (attempt {self._progress.attempt})."
        )
        await self._record()

    def _set_status(self, status: FulfillmentStatus) -> None:
        self._progress.status = status
        self._upsert_attributes(FULFILLMENT_STATUS.value_set(status.value))

    def _drop_set_at_start(self) -> None:
        """Leave out the changes the run's starter already made (its start search attributes):
        a run started by an older starter, without them, still sets them here."""
        at_start = workflow.info().typed_search_attributes
        for name, update in list(self._pending_attributes.items()):
            if update.value is not None and at_start.get(update.key) == update.value:
                del self._pending_attributes[name]

    def _upsert_attributes(self, *updates: SearchAttributeUpdate[Any]) -> None:
        """Change search attributes: the latest value of each goes out with `_flush`."""
        if not self._coalesce_writes:
            workflow.upsert_search_attributes(list(updates))
            return
        for update in updates:
            self._pending_attributes[update.key.name] = update

    def _parked_details(self) -> str:
        failure = self._progress.last_error
        step = self._progress.step.value if self._progress.step else "?"
        until = self._parked_until.strftime("%Y-%m-%d %H:%M UTC") if self._parked_until else ""
        what = f"{failure.code.value}: {failure.summary()}" if failure else "failed"
        return (
            f"Parked at {step}. {what}. Fix the cause at its source, then send retry "
            f"(or cancel) before {until}. {self._order_label()}."
        )

    def _order_label(self) -> str:
        number = self._progress.order_number
        label = f"Order {number}" if number else f"Order {self._input.sf_order_id}"
        account = self._order.account if self._order else None
        if account is not None and account.customer_number:
            label += f" (customer {account.customer_number})"
        return label

    def _loaded(self) -> OrderSnapshot:
        assert self._order is not None, "load_order runs first"
        return self._order

    def _client_id(self) -> int:
        client_id = self._progress.whmcs_client_id
        assert client_id is not None, "resolve_billing_client runs first"
        return client_id

    def _billing_result(self) -> BillingOrderResult:
        assert self._billing is not None, "create_billing_order runs first"
        return self._billing


def _metric_counter(name: str, description: str) -> MetricCounter:
    # The workflow's meter records nothing while a history is replayed: counts stay exact.
    return workflow.metric_meter().create_counter(name, description)


def _completed(status: FulfillmentStatus) -> None:
    _metric_counter("fulfillment_completed", "Fulfillments ended, by how").add(
        1, {"status": status.value}
    )


def _failure_of(failed: ActivityError, budget: timedelta) -> Failure:
    """The failure a failed activity parks with: its business code, or UPSTREAM_UNAVAILABLE."""
    last: FailureError | None = failed.cause if isinstance(failed.cause, FailureError) else None
    error: ApplicationError | None = None
    seen: BaseException | None = failed.cause
    while seen is not None:
        if isinstance(seen, ApplicationError):
            error = seen
            break
        seen = seen.__cause__
    if error is not None and error.non_retryable and error.type in tuple(ErrorCode):
        if error.details:
            try:
                return Failure.model_validate(error.details[0])
            except ValueError:
                pass
        return Failure(code=ErrorCode(error.type), kind=ErrorKind.BUSINESS, message=error.message)
    kind = ErrorKind.NOT_SENT
    if error is not None and error.type in tuple(ErrorKind):
        kind = ErrorKind(error.type)
    reason = error.message if error is not None else (str(last) if last else "timed out")
    return Failure(
        code=ErrorCode.UPSTREAM_UNAVAILABLE,
        kind=kind,
        message=f"still failing after {_duration(budget)} of retries",
        detail=reason,
    )


def _undo_report(undone: list[str], not_undone: list[str]) -> str:
    """What the compensation did, in a sentence or two for Salesforce and the UI."""
    report = ". Undone: " + "; ".join(undone) if undone else ". Nothing was left to undo"
    if not_undone:
        report += ". Not undone: " + "; ".join(not_undone)
    return report + "."


def _duration(span: timedelta) -> str:
    seconds = int(span.total_seconds())
    if seconds % 86400 == 0:
        return f"{seconds // 86400} days"
    if seconds % 3600 == 0:
        return f"{seconds // 3600} h"
    if seconds % 60 == 0:
        return f"{seconds // 60} min"
    return f"{seconds} s"
