"""A small workflow that carries customer data through every place history stores it.

Its input, an activity result, a failed activity attempt's message and its result all quote a
customer's name and phone number, so a test can look for them in the raw history. Importable
without side effects (the workflow sandbox re-imports it).
"""

from __future__ import annotations

from datetime import timedelta

from pydantic import BaseModel
from temporalio import activity, workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError


class Customer(BaseModel, frozen=True):
    customer_name: str
    phone_number: str


class LineStatus(BaseModel, frozen=True):
    customer_name: str
    phone_number: str
    active: bool


class EchoResult(BaseModel, frozen=True):
    line: LineStatus
    rejection: str


@activity.defn
async def activate_line(customer: Customer) -> LineStatus:
    # The first attempt fails quoting the number, as an upstream error message would; history
    # keeps it as the activity's last failure.
    if activity.info().attempt == 1:
        raise ApplicationError(f"line {customer.phone_number} is busy, try again", type="Busy")
    return LineStatus(
        customer_name=customer.customer_name, phone_number=customer.phone_number, active=True
    )


@activity.defn
async def refuse_line(customer: Customer) -> None:
    raise ApplicationError(
        f"{customer.customer_name} may not port {customer.phone_number}",
        type="Refused",
        non_retryable=True,
    )


@workflow.defn
class EchoCustomerWorkflow:
    @workflow.run
    async def run(self, customer: Customer) -> EchoResult:
        line = await workflow.execute_activity(
            activate_line,
            customer,
            start_to_close_timeout=timedelta(seconds=10),
            retry_policy=RetryPolicy(initial_interval=timedelta(milliseconds=10)),
        )
        try:
            await workflow.execute_activity(
                refuse_line, customer, start_to_close_timeout=timedelta(seconds=10)
            )
        except ActivityError as error:
            # An ActivityTaskFailed event now holds the refusal: its message quotes the customer.
            cause = error.cause
            rejection = cause.message if isinstance(cause, ApplicationError) else str(cause)
        else:
            rejection = ""
        return EchoResult(line=line, rejection=rejection)
