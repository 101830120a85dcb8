"""The REST API under `/services/data/`: query, queryAll, sObjects, upsert, composite.

`RestApi.dispatch` handles one call (method, path after `/services/data/`, query string, JSON
body) for an authenticated session and returns the status, body and headers Salesforce would
send; the Starlette endpoint and the composite resource both use it, so a composite subrequest
behaves exactly like the same call made alone. Each top-level call is one transaction: its record
changes publish change events (`cdc.transaction_events`: one per record, merged across records
with the same change; one transaction key, numbered in order) only once it commits. Their
`changeOrigin` is `com/salesforce/api/rest/<version>`, with `;client=<name>` only when the call
sent `Sforce-Call-Options: client=<name>` (in a composite: the top-level request's, else that of
the first subrequest that changed a record, sent in its `httpHeaders`). Composite subrequests
may carry any header but `Accept`, `Authorization` and `Content-Type`, which they inherit (one
of those in a subrequest fails the whole request with 400, as Salesforce's does); the whole
composite counts as one call against the API allowance. Platform events posted as
`sobjects/<Name>__e` are published on the event bus. A record read carries the flat address
fields and, as Salesforce's does, the compound `BillingAddress` (null when every component is
empty).
"""

from __future__ import annotations

import json
import re
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from emulators.salesforce import cdc, ids, schema, soql
from emulators.salesforce.auth import Session, SessionStore
from emulators.salesforce.errors import ApiError, invalid_session, not_found
from emulators.salesforce.events import EventBus
from emulators.salesforce.schema import FieldType, SObject
from emulators.salesforce.store import Record, Store, Transaction

_VERSION_RE = re.compile(r"^v(\d{2,3}\.\d)$")
_REFERENCE_RE = re.compile(r"@\{([A-Za-z0-9_]+)((?:\.[A-Za-z0-9_]+|\[\d+\])*)\}")
_PATH_STEP_RE = re.compile(r"\.([A-Za-z0-9_]+)|\[(\d+)\]")
DEFAULT_BATCH_SIZE = 2000
MIN_BATCH_SIZE = 200
MAX_COMPOSITE_SUBREQUESTS = 25
MAX_OPEN_CURSORS = 200
DAILY_API_LIMIT = 15000
# From this version on, an upsert that updates answers 200 with a body instead of 204.
_UPSERT_BODY_VERSION = 46.0
_ROLLED_BACK = (
    "The transaction was rolled back since another operation in the same transaction failed."
)
# Headers a composite subrequest inherits from the top-level request and must not set itself.
_INHERITED_HEADERS = frozenset({"accept", "authorization", "content-type"})


@dataclass
class ApiRequest:
    method: str
    version: str
    path: str  # after /services/data/vXX.X/, no leading slash
    query: Mapping[str, str]
    body: Any
    headers: Mapping[str, str]
    session: Session


@dataclass
class ApiResponse:
    status: int
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    # The client a composite subrequest that changed records named (`Sforce-Call-Options`).
    change_client: str | None = None


@dataclass
class _Cursor:
    records: list[Record]
    batch_size: int
    resource: str


class RestApi:
    """The data API of one org; `routes` mounts it in a Starlette app."""

    def __init__(
        self,
        store: Store,
        bus: EventBus,
        sessions: SessionStore,
        new_id: Callable[[str], str],
        clock: Callable[[], float],
    ) -> None:
        self.store = store
        self.bus = bus
        self.sessions = sessions
        self.new_id = new_id
        self.clock = clock
        self.api_calls = 0
        self._cursors: OrderedDict[str, _Cursor] = OrderedDict()
        self.routes = [
            Route("/services/data", self.versions_endpoint, methods=["GET"]),
            Route("/services/data/", self.versions_endpoint, methods=["GET"]),
            Route(
                "/services/data/{version}/{rest:path}",
                self.endpoint,
                methods=["GET", "POST", "PATCH", "PUT", "DELETE", "HEAD"],
            ),
        ]

    def reset(self) -> None:
        self._cursors.clear()

    # ---- HTTP ------------------------------------------------------------------------------

    async def versions_endpoint(self, request: Request) -> Response:
        return JSONResponse(
            [
                {"label": _release_name(n), "url": f"/services/data/v{n}.0", "version": f"{n}.0"}
                for n in range(40, 65)
            ]
        )

    async def endpoint(self, request: Request) -> Response:
        self.api_calls += 1
        session = self._session(request)
        if session is None:
            return _json(invalid_session().body(), 401)
        match = _VERSION_RE.match(request.path_params["version"])
        if match is None:
            return _json(not_found().body(), 404)
        raw = await request.body()
        body: Any = None
        if raw.strip():
            try:
                body = json.loads(raw)
            except json.JSONDecodeError as exc:
                error = ApiError(400, "JSON_PARSER_ERROR", f"Unexpected character: {exc.msg}")
                return _json(error.body(), 400)
        api_request = ApiRequest(
            method=request.method,
            version=match.group(1),
            path=request.path_params["rest"].strip("/"),
            query=dict(request.query_params),
            body=body,
            headers={k.lower(): v for k, v in request.headers.items()},
            session=session,
        )
        result = self.handle(api_request)
        headers = {"Sforce-Limit-Info": f"api-usage={self.api_calls}/{DAILY_API_LIMIT}"}
        headers.update(result.headers)
        if result.body is None:
            return Response(status_code=result.status, headers=headers)
        return _json(result.body, result.status, headers)

    def _session(self, request: Request) -> Session | None:
        authorization = request.headers.get("authorization", "")
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() not in ("bearer", "oauth") or not token:
            return None
        return self.sessions.lookup(token.strip())

    # ---- one call = one transaction ---------------------------------------------------------

    def handle(self, request: ApiRequest) -> ApiResponse:
        """Run one top-level call in its own transaction and publish its events if it commits."""
        tx = Transaction(request.session.user_id)
        try:
            response = self.dispatch(request, tx)
        except ApiError as exc:
            self.store.rollback(tx)
            return ApiResponse(exc.status, exc.body())
        self.publish(tx, request, subrequest_client=response.change_client)
        return response

    def publish(
        self, tx: Transaction, request: ApiRequest, *, subrequest_client: str | None = None
    ) -> None:
        events = cdc.transaction_events(
            tx.changes, lambda record_id: self.store.get(record_id, include_deleted=True)
        )
        origin = f"com/salesforce/api/rest/{request.version}"
        # Only a client the call named itself: the connected app is not the client.
        client = _call_option_client(request.headers) or subrequest_client
        if client:
            origin += f";client={client}"
        key = self.bus.new_transaction_key() if events else ""
        for sequence, event in enumerate(events, start=1):
            self.bus.publish_change(
                entity=event.entity,
                change_type=event.change_type,
                record_ids=event.record_ids,
                fields=event.fields,
                changed_fields=event.changed_fields,
                commit_user=tx.user_id,
                change_origin=origin,
                transaction_key=key,
                sequence_number=sequence,
            )
        for name, fields in tx.platform_events:
            self.bus.publish_platform_event(name=name, fields=fields, created_by=tx.user_id)
        tx.changes.clear()
        tx.platform_events.clear()

    # ---- routing ---------------------------------------------------------------------------

    def dispatch(self, request: ApiRequest, tx: Transaction) -> ApiResponse:
        parts = [p for p in request.path.split("/") if p] if request.path else []
        method = request.method
        if not parts:
            return self._only(method, "GET", lambda: ApiResponse(200, self._resources(request)))
        head = parts[0]
        if head in ("query", "queryAll"):
            if method != "GET":
                raise _method_not_allowed(method)
            if len(parts) == 2:
                return self._more(request, parts[1], head)
            if len(parts) == 1:
                return self._query(request, include_deleted=head == "queryAll")
        if head == "sobjects":
            return self._sobjects(request, tx, parts[1:])
        if head == "composite" and len(parts) == 1:
            return self._only(method, "POST", lambda: self._composite(request, tx))
        if head == "composite" and parts[1:] == ["sobjects"]:
            return self._collection(request, tx)
        if head == "limits" and len(parts) == 1:
            return self._only(method, "GET", self._limits)
        raise not_found()

    @staticmethod
    def _only(method: str, allowed: str, handler: Callable[[], ApiResponse]) -> ApiResponse:
        if method != allowed:
            raise _method_not_allowed(method, allowed)
        return handler()

    def _resources(self, request: ApiRequest) -> dict[str, str]:
        base = f"/services/data/v{request.version}"
        names = ("sobjects", "query", "queryAll", "composite", "limits")
        return {name: f"{base}/{name}" for name in names}

    def _limits(self) -> ApiResponse:
        return ApiResponse(
            200,
            {
                "DailyApiRequests": {
                    "Max": DAILY_API_LIMIT,
                    "Remaining": max(DAILY_API_LIMIT - self.api_calls, 0),
                }
            },
        )

    # ---- query -----------------------------------------------------------------------------

    def _query(self, request: ApiRequest, *, include_deleted: bool) -> ApiResponse:
        text = request.query.get("q")
        if text is None:
            raise ApiError(400, "MALFORMED_QUERY", "A query string has to be specified")
        today = datetime.fromtimestamp(self.clock(), UTC).date()
        result = soql.execute(
            text,
            self.store,
            version=request.version,
            include_deleted=include_deleted,
            today=today,
        )
        batch = _batch_size(request.headers.get("sforce-query-options", ""))
        resource = "queryAll" if include_deleted else "query"
        return ApiResponse(200, self._page(request, result, batch, resource))

    def _page(
        self, request: ApiRequest, result: soql.QueryResult, batch: int, resource: str
    ) -> dict[str, Any]:
        page: dict[str, Any] = {"totalSize": result.total_size, "done": True}
        if len(result.records) <= batch:
            page["records"] = result.records
            return page
        locator = self.new_id(schema.QUERY_LOCATOR_PREFIX)
        self._cursors[locator] = _Cursor(result.records, batch, resource)
        while len(self._cursors) > MAX_OPEN_CURSORS:
            self._cursors.popitem(last=False)
        page["done"] = False
        page["nextRecordsUrl"] = f"/services/data/v{request.version}/{resource}/{locator}-{batch}"
        page["records"] = result.records[:batch]
        return page

    def _more(self, request: ApiRequest, locator_text: str, resource: str) -> ApiResponse:
        locator, _, offset_text = locator_text.partition("-")
        cursor = self._cursors.get(locator)
        if cursor is None or not offset_text.isdigit() or cursor.resource != resource:
            raise ApiError(400, "INVALID_QUERY_LOCATOR", "invalid query locator")
        offset = int(offset_text)
        records = cursor.records[offset : offset + cursor.batch_size]
        page: dict[str, Any] = {"totalSize": len(cursor.records), "done": True}
        following = offset + cursor.batch_size
        if following < len(cursor.records):
            page["done"] = False
            page["nextRecordsUrl"] = (
                f"/services/data/v{request.version}/{resource}/{locator}-{following}"
            )
        else:
            del self._cursors[locator]
        page["records"] = records
        return ApiResponse(200, page)

    # ---- sObjects --------------------------------------------------------------------------

    def _sobjects(self, request: ApiRequest, tx: Transaction, parts: list[str]) -> ApiResponse:
        method = request.method
        if not parts:
            return self._only(method, "GET", lambda: ApiResponse(200, self._global(request)))
        sobject = schema.get_object(parts[0])
        if sobject is None:
            raise not_found()
        if len(parts) == 1:
            if method == "GET":
                return ApiResponse(200, {"objectDescribe": self._summary(sobject, request)})
            if method == "POST":
                if sobject.platform_event:
                    return self._publish_event(request, tx, sobject)
                return self._create(request, tx, sobject)
            raise _method_not_allowed(method, "GET, HEAD, POST")
        if sobject.platform_event:
            raise not_found()
        if len(parts) == 2 and parts[1] == "describe":
            return self._only(method, "GET", lambda: ApiResponse(200, _describe(sobject, request)))
        if len(parts) == 2:
            return self._record(request, tx, sobject, parts[1])
        if len(parts) == 3:
            return self._by_external_id(request, tx, sobject, parts[1], parts[2])
        raise not_found()

    def _global(self, request: ApiRequest) -> dict[str, Any]:
        return {
            "encoding": "UTF-8",
            "maxBatchSize": 200,
            "sobjects": [self._summary(o, request) for o in schema.OBJECTS.values()],
        }

    def _summary(self, sobject: SObject, request: ApiRequest) -> dict[str, Any]:
        base = f"/services/data/v{request.version}/sobjects/{sobject.name}"
        return {
            "name": sobject.name,
            "label": sobject.label,
            "keyPrefix": sobject.key_prefix,
            "custom": sobject.name.endswith(("__c", "__e")),
            "createable": True,
            "updateable": not sobject.platform_event,
            "deletable": not sobject.platform_event,
            "queryable": not sobject.platform_event,
            "urls": {
                "sobject": base,
                "describe": f"{base}/describe",
                "rowTemplate": f"{base}/{{ID}}",
            },
        }

    def _create(self, request: ApiRequest, tx: Transaction, sobject: SObject) -> ApiResponse:
        data = _record_body(request.body)
        record = self.store.create(tx, sobject, data)
        return ApiResponse(
            201,
            {"id": record["Id"], "success": True, "errors": []},
            {"Location": _record_url(request.version, sobject, record["Id"])},
        )

    def _publish_event(self, request: ApiRequest, tx: Transaction, sobject: SObject) -> ApiResponse:
        data = _record_body(request.body)
        fields: dict[str, Any] = {}
        for name, raw in data.items():
            if name == "attributes":
                continue
            spec = sobject.field(name)
            if spec is None:
                raise schema.unknown_field_error(sobject, name)
            fields[spec.name] = schema.coerce(sobject, spec, raw)
        tx.platform_events.append((sobject.name, fields))
        return ApiResponse(
            201, {"id": self.new_id(sobject.key_prefix), "success": True, "errors": []}
        )

    def _record(
        self, request: ApiRequest, tx: Transaction, sobject: SObject, raw_id: str
    ) -> ApiResponse:
        record_id = ids.normalize(raw_id)
        if record_id is None or ids.key_prefix(record_id) != sobject.key_prefix:
            raise not_found()
        if request.method in ("GET", "HEAD"):
            record = self.store.get(record_id)
            if record is None:
                raise not_found()
            return ApiResponse(200, self._render(request, sobject, record))
        if request.method == "PATCH":
            self.store.update(tx, sobject, record_id, _record_body(request.body))
            return ApiResponse(204)
        if request.method == "DELETE":
            self.store.delete(tx, sobject, record_id)
            return ApiResponse(204)
        raise _method_not_allowed(request.method, "GET, HEAD, PATCH, DELETE")

    def _render(self, request: ApiRequest, sobject: SObject, record: Record) -> dict[str, Any]:
        wanted = request.query.get("fields")
        out: dict[str, Any] = {
            "attributes": {
                "type": sobject.name,
                "url": _record_url(request.version, sobject, record["Id"]),
            }
        }
        if wanted is None:
            for field_spec in sobject.fields:
                out[field_spec.name] = record.get(field_spec.name)
                member = sobject.compound_of(field_spec.name)
                if member is not None and field_spec.name == member[0].field_names[-1]:
                    out[member[0].name] = _rest_compound(member[0], record)
            return out
        for name in (n.strip() for n in wanted.split(",") if n.strip()):
            spec = sobject.field(name)
            compound = sobject.compound(name) if spec is None else None
            if compound is not None:
                out[compound.name] = _rest_compound(compound, record)
                continue
            if spec is None:
                raise ApiError(
                    400,
                    "INVALID_FIELD",
                    f"No such column '{name}' on entity '{sobject.name}'. If you are attempting "
                    "to use a custom field, be sure to append the '__c' after the custom field "
                    "name. Please reference your WSDL or the describe call for the appropriate "
                    "names.",
                )
            out[spec.name] = record.get(spec.name)
        return out

    def _by_external_id(
        self, request: ApiRequest, tx: Transaction, sobject: SObject, field_name: str, value: str
    ) -> ApiResponse:
        spec = sobject.field(field_name)
        if spec is None or not (spec.external_id or spec.name == "Id"):
            raise ApiError(
                404,
                "NOT_FOUND",
                f"Provided external ID field does not exist or is not accessible: {field_name}",
            )
        matches = self._external_matches(sobject, spec, value)
        if len(matches) > 1:
            return ApiResponse(
                300, [_record_url(request.version, sobject, r["Id"]) for r in matches]
            )
        method = request.method
        if method in ("GET", "HEAD"):
            if not matches:
                raise not_found()
            return ApiResponse(200, self._render(request, sobject, matches[0]))
        if method == "DELETE":
            if not matches:
                raise not_found()
            self.store.delete(tx, sobject, matches[0]["Id"])
            return ApiResponse(204)
        if method != "PATCH":
            raise _method_not_allowed(method, "GET, HEAD, PATCH, DELETE")
        data = _record_body(request.body)
        if matches:
            record_id = matches[0]["Id"]
            self.store.update(tx, sobject, record_id, data)
            if float(request.version) < _UPSERT_BODY_VERSION:
                return ApiResponse(204)
            return ApiResponse(
                200, {"id": record_id, "success": True, "errors": [], "created": False}
            )
        if spec.name == "Id":
            raise not_found()
        record = self.store.create(tx, sobject, {**data, spec.name: value})
        return ApiResponse(
            201,
            {"id": record["Id"], "success": True, "errors": [], "created": True},
            {"Location": _record_url(request.version, sobject, record["Id"])},
        )

    def _external_matches(self, sobject: SObject, spec: schema.Field, value: str) -> list[Record]:
        if spec.name == "Id":
            record_id = ids.normalize(value)
            if record_id is None or ids.key_prefix(record_id) != sobject.key_prefix:
                return []
            record = self.store.get(record_id)
            return [record] if record is not None else []
        if spec.type in schema.NUMBER_TYPES:
            try:
                number = float(value)
            except ValueError:
                return []
            return [r for r in self.store.records(sobject) if r[spec.name] == number]
        lowered = value.lower()
        return [
            r
            for r in self.store.records(sobject)
            if isinstance(r[spec.name], str) and r[spec.name].lower() == lowered
        ]

    # ---- composite -------------------------------------------------------------------------

    def _composite(self, request: ApiRequest, tx: Transaction) -> ApiResponse:
        body = request.body
        if not isinstance(body, dict) or not isinstance(body.get("compositeRequest"), list):
            raise ApiError(400, "JSON_PARSER_ERROR", "compositeRequest is required")
        subrequests: list[Any] = body["compositeRequest"]
        if len(subrequests) > MAX_COMPOSITE_SUBREQUESTS:
            raise ApiError(
                400,
                "LIMIT_EXCEEDED",
                f"Limit Exceeded: Composite subrequests: {len(subrequests)} > "
                f"{MAX_COMPOSITE_SUBREQUESTS}",
            )
        all_or_none = bool(body.get("allOrNone", False))
        results: dict[str, Any] = {}
        replies: list[dict[str, Any]] = []
        failed = False
        change_client: str | None = None
        for sub in subrequests:
            if not isinstance(sub, dict):
                raise ApiError(400, "JSON_PARSER_ERROR", "each compositeRequest must be an object")
            inherited = sorted(
                name for name in sub.get("httpHeaders") or {} if name.lower() in _INHERITED_HEADERS
            )
            if inherited:
                raise ApiError(
                    400,
                    "INVALID_API_INPUT",
                    f"Header {inherited[0]} is not allowed in a subrequest: it is inherited "
                    "from the composite request",
                )
        for sub in subrequests:
            reference = str(sub.get("referenceId", ""))
            if failed and all_or_none:
                replies.append(_halted(reference, _ROLLED_BACK))
                continue
            mark = tx.mark()
            try:
                response = self._subrequest(request, tx, sub, results)
            except _Unresolved as exc:
                replies.append(_halted(reference, str(exc)))
                failed = True
                continue
            except ApiError as exc:
                response = ApiResponse(exc.status, exc.body())
            if response.status >= 400:
                failed = True
                self.store.rollback(tx, to=mark)
            elif change_client is None and len(tx.changes) > mark[1]:
                change_client = _call_option_client(
                    {str(k).lower(): str(v) for k, v in (sub.get("httpHeaders") or {}).items()}
                )
            results[reference] = response.body
            replies.append(
                {
                    "body": response.body,
                    "httpHeaders": response.headers,
                    "httpStatusCode": response.status,
                    "referenceId": reference,
                }
            )
        if failed and all_or_none:
            self.store.rollback(tx)
            for reply in replies:
                if reply["httpStatusCode"] < 400:
                    reply.update(_halted(reply["referenceId"], _ROLLED_BACK))
        return ApiResponse(200, {"compositeResponse": replies}, change_client=change_client)

    def _subrequest(
        self, parent: ApiRequest, tx: Transaction, sub: dict[str, Any], results: dict[str, Any]
    ) -> ApiResponse:
        url = _substitute(str(sub.get("url", "")), results)
        parts = urlsplit(url)
        match = re.match(r"^/services/data/(v\d{2,3}\.\d)/?(.*)$", parts.path)
        if match is None:
            raise not_found()
        version = _VERSION_RE.match(match.group(1))
        assert version is not None
        sub_request = ApiRequest(
            method=str(sub.get("method", "GET")).upper(),
            version=version.group(1),
            path=match.group(2).strip("/"),
            query=dict(parse_qsl(parts.query)),
            body=_substitute(sub.get("body"), results),
            headers={
                **parent.headers,
                **{k.lower(): str(v) for k, v in sub.get("httpHeaders", {}).items()},
            },
            session=parent.session,
        )
        if sub_request.path.split("/")[0] == "composite":
            raise ApiError(400, "INVALID_API_INPUT", "Composite requests cannot be nested")
        return self.dispatch(sub_request, tx)

    def _collection(self, request: ApiRequest, tx: Transaction) -> ApiResponse:
        method = request.method
        if method == "DELETE":
            ids_text = request.query.get("ids", "")
            all_or_none = request.query.get("allOrNone", "false").lower() == "true"
            targets = [i for i in ids_text.split(",") if i]
            return self._each(tx, all_or_none, targets, self._collection_delete)
        if method not in ("POST", "PATCH"):
            raise _method_not_allowed(method, "POST, PATCH, DELETE")
        body = request.body
        if not isinstance(body, dict) or not isinstance(body.get("records"), list):
            raise ApiError(400, "JSON_PARSER_ERROR", "records is required")
        if len(body["records"]) > 200:
            raise ApiError(
                400,
                "EXCEEDED_ID_LIMIT",
                "record limit reached. cannot submit more than 200 records into this call",
            )
        all_or_none = bool(body.get("allOrNone", False))
        action = self._collection_create if method == "POST" else self._collection_update
        return self._each(tx, all_or_none, body["records"], action)

    def _each(
        self,
        tx: Transaction,
        all_or_none: bool,
        items: list[Any],
        action: Callable[[Transaction, Any], str],
    ) -> ApiResponse:
        results: list[dict[str, Any]] = []
        failed = False
        for item in items:
            mark = tx.mark()
            try:
                record_id = action(tx, item)
                results.append({"id": record_id, "success": True, "errors": []})
            except ApiError as exc:
                self.store.rollback(tx, to=mark)
                failed = True
                error = {
                    "statusCode": exc.error_code,
                    "message": exc.message,
                    "fields": exc.fields or [],
                }
                results.append({"success": False, "errors": [error]})
        if failed and all_or_none:
            self.store.rollback(tx)
            rolled_back = {
                "statusCode": "ALL_OR_NONE_OPERATION_ROLLED_BACK",
                "message": "Record rolled back because not all records were valid and the request "
                "was using AllOrNone header",
                "fields": [],
            }
            results = [
                r if not r["success"] else {"success": False, "errors": [rolled_back]}
                for r in results
            ]
        return ApiResponse(200, results)

    def _collection_sobject(self, item: Any) -> SObject:
        attributes = item.get("attributes") if isinstance(item, dict) else None
        type_name = attributes.get("type") if isinstance(attributes, dict) else None
        sobject = schema.get_object(str(type_name)) if type_name else None
        if sobject is None or sobject.platform_event:
            raise ApiError(400, "INVALID_TYPE", "Must send a concrete entity type.", [])
        return sobject

    def _collection_create(self, tx: Transaction, item: Any) -> str:
        sobject = self._collection_sobject(item)
        if "Id" in item or "id" in item:
            raise ApiError(400, "INVALID_FIELD", "cannot specify Id in an insert call", ["Id"])
        return str(self.store.create(tx, sobject, item)["Id"])

    def _collection_update(self, tx: Transaction, item: Any) -> str:
        sobject = self._collection_sobject(item)
        data = {k: v for k, v in item.items() if k.lower() != "id"}
        record_id = ids.normalize(str(item.get("Id") or item.get("id") or ""))
        if record_id is None:
            raise ApiError(400, "MISSING_ARGUMENT", "Id not specified in an update call", ["Id"])
        self.store.update(tx, sobject, record_id, data)
        return record_id

    def _collection_delete(self, tx: Transaction, raw_id: Any) -> str:
        record_id = ids.normalize(str(raw_id))
        sobject = schema.BY_PREFIX.get(record_id[:3]) if record_id else None
        if record_id is None or sobject is None:
            raise ApiError(400, "MALFORMED_ID", f"malformed id {raw_id}", [])
        self.store.delete(tx, sobject, record_id)
        return record_id


class _Unresolved(Exception):
    """A composite reference (`@{ref.id}`) that names nothing available."""


def _substitute(value: Any, results: dict[str, Any]) -> Any:
    if isinstance(value, str):
        return _REFERENCE_RE.sub(lambda m: str(_resolve(m, results)), value)
    if isinstance(value, list):
        return [_substitute(v, results) for v in value]
    if isinstance(value, dict):
        return {k: _substitute(v, results) for k, v in value.items()}
    return value


def _resolve(match: re.Match[str], results: dict[str, Any]) -> Any:
    reference, path = match.group(1), match.group(2)
    missing = _Unresolved(
        f"Invalid reference specified. No value for {reference}{path} found in {reference}. "
        f"Provided referenceId ('{reference}') must start with a letter or a number, and it can "
        "contain only letters, numbers and underscores ('_')."
    )
    if reference not in results:
        raise missing
    current = results[reference]
    for key, index in _PATH_STEP_RE.findall(path):
        if key and isinstance(current, dict) and key in current:
            current = current[key]
        elif index and isinstance(current, list) and int(index) < len(current):
            current = current[int(index)]
        else:
            raise missing
    return current


def _halted(reference: str, message: str) -> dict[str, Any]:
    return {
        "body": [{"errorCode": "PROCESSING_HALTED", "message": message}],
        "httpHeaders": {},
        "httpStatusCode": 400,
        "referenceId": reference,
    }


def _record_body(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise ApiError(
            400,
            "JSON_PARSER_ERROR",
            "Cannot deserialize instance of sObject from "
            + (
                "VALUE_NULL"
                if body is None
                else "START_ARRAY"
                if isinstance(body, list)
                else "VALUE"
            )
            + " value",
        )
    return body


def _rest_compound(compound: schema.CompoundField, record: Record) -> dict[str, Any] | None:
    """A compound address as REST reads give it: lower camel case keys, null when empty."""
    if all(record.get(name) is None for name in compound.field_names):
        return None
    value: dict[str, Any] = {"geocodeAccuracy": None, "latitude": None, "longitude": None}
    for part, name in compound.parts:
        value[part[0].lower() + part[1:]] = record.get(name)
    return dict(sorted(value.items()))


def _describe(sobject: SObject, request: ApiRequest) -> dict[str, Any]:
    base = f"/services/data/v{request.version}/sobjects/{sobject.name}"
    return {
        "name": sobject.name,
        "label": sobject.label,
        "keyPrefix": sobject.key_prefix,
        "custom": sobject.name.endswith(("__c", "__e")),
        "fields": [
            {
                "name": spec.name,
                "label": spec.display,
                "type": spec.type.value,
                "length": spec.length or 0,
                "nillable": not spec.required and spec.type is not FieldType.BOOLEAN,
                "createable": spec.createable,
                "updateable": spec.updateable,
                "externalId": spec.external_id,
                "idLookup": spec.external_id or spec.name == "Id",
                "referenceTo": [spec.reference_to] if spec.reference_to else [],
                "relationshipName": spec.relationship_name,
                "restrictedPicklist": spec.restricted,
                "picklistValues": [
                    {"active": True, "defaultValue": False, "label": v, "value": v}
                    for v in spec.picklist
                ],
                "defaultValue": spec.default,
            }
            for spec in sobject.fields
        ]
        + [
            {
                "name": compound.name,
                "label": compound.name,
                "type": "address",
                "length": 0,
                "nillable": True,
                "createable": False,
                "updateable": False,
                "externalId": False,
                "idLookup": False,
                "referenceTo": [],
                "relationshipName": None,
                "restrictedPicklist": False,
                "picklistValues": [],
                "defaultValue": None,
            }
            for compound in sobject.compounds
        ],
        "childRelationships": [
            {"childSObject": c.child_object, "field": c.field, "relationshipName": c.name}
            for c in sobject.children
        ],
        "urls": {"sobject": base, "describe": f"{base}/describe", "rowTemplate": f"{base}/{{ID}}"},
    }


def _record_url(version: str, sobject: SObject, record_id: str) -> str:
    return f"/services/data/v{version}/sobjects/{sobject.name}/{record_id}"


def _batch_size(options: str) -> int:
    for option in options.split(","):
        key, _, value = option.strip().partition("=")
        if key.strip().lower() == "batchsize" and value.strip().isdigit():
            return max(MIN_BATCH_SIZE, min(DEFAULT_BATCH_SIZE, int(value.strip())))
    return DEFAULT_BATCH_SIZE


def _call_option_client(headers: Mapping[str, str]) -> str | None:
    for option in headers.get("sforce-call-options", "").split(","):
        key, _, value = option.strip().partition("=")
        if key.strip().lower() == "client" and value.strip():
            return value.strip()
    return None


def _method_not_allowed(method: str, allowed: str = "GET") -> ApiError:
    return ApiError(
        405,
        "METHOD_NOT_ALLOWED",
        f"HTTP Method '{method}' not allowed. Allowed are {allowed}",
    )


def _release_name(version: int) -> str:
    index = version - 59
    season = ("Winter", "Spring", "Summer")[index % 3]
    return f"{season} '{24 + index // 3:02d}"


def _json(body: Any, status: int, headers: dict[str, str] | None = None) -> Response:
    return JSONResponse(body, status_code=status, headers=headers)
