"""The flow's Omnitron assumptions, checked with reads only: the login and its token header, paging
and `limit`, ordering by modification date, each filter the flow sends, the fields it reads, the
retrieve, the rejected_count query and the plan statuses; for Order Transaction flows the
transaction list's filters and the field that leads to a transaction's order.

A filter is proved honoured by a value nothing can have: it must list nothing. Django REST
Framework ignores a parameter it does not know, and then lists everything, so a list that merely
looks right proves nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from itertools import islice, pairwise
from typing import Any

from order_cancel.clients.omnitron import (
    BY_MODIFIED_DATE,
    CANCELLATION_PLAN_PATH,
    CANCELLATION_PLAN_STATUSES_PATH,
    CANCELLATION_PLANS_PATH,
    LOGIN_PATH,
    ORDER_TRANSACTION_PATH,
    ORDERING_ALTERNATIVES,
    ORDERING_PARAM,
    REJECTED_STATUS,
    RETURN_TRANSACTION,
    TRANSACTION_ORDER_FIELD,
    OmnitronClient,
    OmnitronError,
    PlanQuery,
    TransactionQuery,
)
from order_cancel.flows.models import CancelStatus, FlowConfig
from order_cancel.pipeline.fetch import plan_query, plan_type_filter, transaction_order, work_items
from order_cancel.pipeline.plan import PLAN_FIELDS, WorkItem
from order_cancel.pipeline.watermark import parse_time
from order_cancel.preflight.findings import Finding, broken, failed_call, holds, unchecked

# The paging and ordering probes read a few small pages.
PROBE_LIMIT, PROBE_PAGES = 5, 3
# Values no plan or transaction can have: a filter that still lists something ignores them.
NO_SUCH_VALUE, NO_SUCH_PK = "preflight-no-such-value", 0
FAR_FUTURE, FAR_PAST = "2999-01-01T00:00:00Z", "1970-01-01T00:00:00Z"

Entry = dict[str, Any]
Matches = Callable[[Entry], bool]


@dataclass(frozen=True)
class Sample:
    """The first plans (and transactions) of the flow's own lists, or the call that failed."""

    items: list[WorkItem]
    transactions: list[Entry]
    failure: OmnitronError | None = None

    @property
    def plans(self) -> list[Entry]:
        return [item.plan for item in self.items if item.problem is None]


def take_sample(omnitron: OmnitronClient, flow: FlowConfig, size: int) -> Sample:
    settings = flow.get_data
    try:
        items = list(islice(work_items(omnitron, flow), size))
        transactions = []
        if settings.cancel_status is CancelStatus.ORDER_TRANSACTION:
            listed = omnitron.return_transactions(
                settings.channel_type, tuple(settings.channel_ids), settings.page_size
            )
            transactions = list(islice(listed, size))
    except OmnitronError as exc:
        return Sample([], [], exc)
    return Sample(items, transactions)


def login(omnitron: OmnitronClient) -> Finding:
    assumption = "Omnitron login answers a token"
    try:
        omnitron.login()
    except OmnitronError as exc:
        return broken(assumption, str(exc))
    return holds(assumption, f"POST /{LOGIN_PATH} as {omnitron.username!r} answered a key")


def omnitron_findings(omnitron: OmnitronClient, flow: FlowConfig, sample: Sample) -> list[Finding]:
    """Every Omnitron assumption after the login."""
    findings = [token_header(omnitron), *paging(omnitron), ordering(omnitron)]
    findings += [plan_filter(omnitron, flow, sample, probe, matches) for probe, matches in _plan_probes(flow)]
    findings += [plan_fields(sample), retrieve(omnitron, sample), rejected_count(omnitron, sample)]
    findings.append(statuses(omnitron, flow))
    if flow.get_data.cancel_status is CancelStatus.ORDER_TRANSACTION:
        findings += transaction_findings(omnitron, flow, sample)
    return findings


def token_header(omnitron: OmnitronClient) -> Finding:
    assumption = "calls carry 'Authorization: Token <key>'"
    try:
        count = omnitron.plan_count(PlanQuery())
    except OmnitronError as exc:
        return failed_call(assumption, exc)
    counted = "" if count is None else f" ({count} plans)"
    return holds(assumption, f"GET /{CANCELLATION_PLANS_PATH} with the login's key answered{counted}")


# -- paging and ordering -----------------------------------------------------------------------------


def paging(omnitron: OmnitronClient) -> list[Finding]:
    shape, size = "lists answer count, next and results", "limit sets the page size"
    try:
        pages = list(islice(omnitron.pages(CANCELLATION_PLANS_PATH, PlanQuery().params(), PROBE_LIMIT), PROBE_PAGES))
    except OmnitronError as exc:
        return [failed_call(shape, exc), unchecked(size, "no page was read")]
    return [_page_shape(shape, pages), _page_size(size, pages)]


def _page_shape(assumption: str, pages: list[Entry]) -> Finding:
    seen: dict[Any, int] = {}
    for number, page in enumerate(pages, start=1):
        if not isinstance(page.get("count"), int) or "next" not in page:
            return broken(assumption, f"page {number} of GET /{CANCELLATION_PLANS_PATH} has only {sorted(page)}")
        for plan in page["results"]:
            pk = plan.get("pk") if isinstance(plan, dict) else None
            if pk in seen:
                return broken(assumption, f"plan {pk} is on page {seen[pk]} and on page {number}: paging is unstable")
            seen[pk] = number
    return holds(assumption, f"{len(pages)} page(s) read by their next links: {len(seen)} plans, none twice")


def _page_size(assumption: str, pages: list[Entry]) -> Finding:
    count, sizes = pages[0].get("count"), [len(page["results"]) for page in pages]
    if not isinstance(count, int):
        return unchecked(assumption, "the first page has no count")
    if count <= PROBE_LIMIT:
        return unchecked(assumption, f"{count} plan(s) in Omnitron: a page of limit={PROBE_LIMIT} holds them all")
    expected = [min(PROBE_LIMIT, count - start) for start in range(0, count, PROBE_LIMIT)][:PROBE_PAGES]
    said = f"limit={PROBE_LIMIT} over {count} plans gave pages of {sizes}"
    return holds(assumption, said) if sizes == expected else broken(assumption, f"{said}, not {expected}")


def ordering(omnitron: OmnitronClient) -> Finding:
    assumption = f"{ORDERING_PARAM}={BY_MODIFIED_DATE} sorts lists"
    try:
        sorts, evidence = _sorts(omnitron, ORDERING_PARAM)
    except OmnitronError as exc:
        return failed_call(assumption, exc)
    if sorts is None:
        return unchecked(assumption, evidence)
    return holds(assumption, evidence) if sorts else broken(assumption, f"{evidence}; {_alternative(omnitron)}")


def _alternative(omnitron: OmnitronClient) -> str:
    """Which other parameter sorts plans by modification date, if any."""
    for param in ORDERING_ALTERNATIVES:
        try:
            if _sorts(omnitron, param)[0]:
                return f"{param}={BY_MODIFIED_DATE} does (ORDERING_PARAM in clients/omnitron.py)"
        except OmnitronError:
            continue
    return f"nor does {', '.join(f'{param}={BY_MODIFIED_DATE}' for param in ORDERING_ALTERNATIVES)}"


def _sorts(omnitron: OmnitronClient, param: str) -> tuple[bool | None, str]:
    """Whether `param` lists plans by modification date both ways over the first pages (None: the
    plans cannot tell). Both ways: an ignored parameter may leave a list that happens to be sorted."""
    for descending in (False, True):
        query = PlanQuery(ordering_param=param, descending=descending)
        asked = f"{param}={query.params()[param]}"
        pages = islice(omnitron.pages(CANCELLATION_PLANS_PATH, query.params(), PROBE_LIMIT), PROBE_PAGES)
        plans = [(_modified(plan), plan) for page in pages for plan in page["results"]]
        dates = [date for date, _ in plans]
        if None in dates or len(set(dates)) < 2:
            return None, f"the {len(plans)} plans listed with {asked} do not have two readable modification dates"
        for (before, first), (after, second) in pairwise(plans):
            if (after > before) if descending else (after < before):
                return False, (
                    f"{asked} listed plan {first.get('pk')} (modified {first['modified_date']}) "
                    f"before plan {second.get('pk')} (modified {second['modified_date']})"
                )
    return True, f"{param}={BY_MODIFIED_DATE} and {param}=-{BY_MODIFIED_DATE} list the first plans in order"


def _modified(plan: Any) -> Any:
    try:
        return parse_time(plan["modified_date"])
    except (KeyError, TypeError, ValueError, AttributeError):
        return None


# -- filters -----------------------------------------------------------------------------------------


def _plan_probes(flow: FlowConfig) -> list[tuple[PlanQuery, Matches | None]]:
    """Each filter of the flow's plan lists with a value no plan can have, and how a listed plan shows
    that it matches what the flow asks (None: a plan does not show it)."""
    settings, plan_type = flow.get_data, plan_type_filter(flow)
    # order_id: rejected_count and the Order Transaction mode; pk__in: pending plans and reconcile.
    probes: list[tuple[PlanQuery, Matches | None]] = [
        (PlanQuery(order_id=NO_SUCH_PK), None),
        (PlanQuery(plan_pks=(NO_SUCH_PK,)), None),
    ]
    if plan_type:
        probes.append((PlanQuery(plan_type=NO_SUCH_VALUE), lambda plan: plan.get("plan_type") == plan_type))
    if settings.cancel_status is CancelStatus.ORDER_TRANSACTION:
        return probes
    status, channels = settings.cancel_status.value, settings.channel_ids
    probes += [
        (PlanQuery(status=NO_SUCH_VALUE), lambda plan: plan.get("status") == status),
        (PlanQuery(channel_type=NO_SUCH_VALUE), None),  # a plan shows its channel's id, not its type
    ]
    if channels:
        probes.append((PlanQuery(channel_ids=(NO_SUCH_PK,)), lambda plan: _dig(plan, "order.channel") in channels))
    if settings.cancel_status is CancelStatus.COMPLETED:  # the watermark, windows and their proof
        probes += [
            (PlanQuery(modified_from=FAR_FUTURE), None),
            (PlanQuery(modified_until=FAR_PAST), None),
            (PlanQuery(modified_through=FAR_PAST), None),
        ]
    return probes


def plan_filter(
    omnitron: OmnitronClient, flow: FlowConfig, sample: Sample, probe: PlanQuery, matches: Matches | None
) -> Finding:
    name = _filter_name(probe.params())
    asked = plan_query(flow).params().get(name)
    assumption = f"filter {name}={asked} honoured" if asked else f"filter {name} honoured"
    listed = sample.plans if sample.failure is None else []
    shown = f"{name}={probe.params()[name]}"
    return _filter(assumption, shown, lambda: omnitron.plan_count(probe), listed, matches, "plan")


def _filter(
    assumption: str,
    shown: str,
    count: Callable[[], int | None],
    listed: Sequence[Entry],
    matches: Matches | None,
    what: str,
) -> Finding:
    if matches is not None:
        misfit = next((entry for entry in listed if not matches(entry)), None)
        if misfit is not None:
            return broken(assumption, f"{what} {misfit.get('pk')} was listed but does not match it")
    agreed = f"; the {len(listed)} {what}(s) listed match it" if matches and listed else ""
    try:
        found = count()
    except OmnitronError as exc:
        if exc.status_code == 400:  # django-filter refuses a value it reads
            return holds(assumption, f"{shown} is refused (HTTP 400): Omnitron reads the filter{agreed}")
        return failed_call(assumption, exc)
    if found is None:
        return unchecked(assumption, f"{shown} answered without a count")
    if found:
        return broken(assumption, f"{shown}, which nothing has, still lists {found} {what}(s): the filter is ignored")
    return holds(assumption, f"{shown}, which nothing has, lists nothing{agreed}")


def _filter_name(params: dict[str, str]) -> str:
    return next(name for name in params if name != ORDERING_PARAM)


# -- plans -------------------------------------------------------------------------------------------


def plan_fields(sample: Sample) -> Finding:
    assumption = "plans have the fields the flow reads"
    if sample.failure is not None:
        return failed_call(assumption, sample.failure)
    if not sample.plans:
        return unchecked(assumption, "the flow's list has no plan now")
    for plan in sample.plans:
        missing = [field for field in PLAN_FIELDS if _dig(plan, field) is None]
        if missing:
            return broken(assumption, f"plan {plan.get('pk')} has no {', '.join(missing)}")
    return holds(assumption, f"the {len(sample.plans)} plan(s) listed have {', '.join(PLAN_FIELDS)}")


def retrieve(omnitron: OmnitronClient, sample: Sample) -> Finding:
    assumption = "a plan can be read by its pk"
    if not sample.plans:
        return unchecked(assumption, "no plan listed to read")
    pk = sample.plans[0].get("pk")
    if not isinstance(pk, int):
        return unchecked(assumption, "the first plan listed has no pk")
    path = "/" + CANCELLATION_PLAN_PATH.format(plan_pk=pk)
    try:
        plan = omnitron.cancellation_plan(pk)
    except OmnitronError as exc:
        return failed_call(assumption, exc)
    if not isinstance(plan, dict) or plan.get("pk") != pk or "status" not in plan:
        return broken(assumption, f"GET {path} answered no plan {pk} with a status")
    return holds(assumption, f"GET {path} answered plan {pk}, status {plan['status']}")


def rejected_count(omnitron: OmnitronClient, sample: Sample) -> Finding:
    assumption = "the rejected_count query answers a count"
    order_pk = _dig(sample.plans[0], "order.pk") if sample.plans else NO_SUCH_PK
    try:
        count = omnitron.rejected_count(order_pk)
    except OmnitronError as exc:
        return failed_call(assumption, exc)
    except (AttributeError, TypeError, ValueError) as exc:  # an answer without a numeric count
        return broken(assumption, f"GET /{CANCELLATION_PLANS_PATH}?order_id={order_pk} answered no count ({exc})")
    return holds(assumption, f"order {order_pk} has {count} {REJECTED_STATUS} plan(s)")


def statuses(omnitron: OmnitronClient, flow: FlowConfig) -> Finding:
    needed = _needed_statuses(flow)
    assumption = f"Omnitron knows the statuses {', '.join(needed)}"
    try:
        known = omnitron.plan_statuses()
    except OmnitronError as exc:
        return failed_call(assumption, exc)
    where = f"GET /{CANCELLATION_PLAN_STATUSES_PATH}"
    if known is None:
        return unchecked(assumption, f"{where} answered in a shape that is not read")
    missing = [status for status in needed if status not in known]
    if missing:
        return broken(assumption, f"{where} lists {', '.join(known)}: not {', '.join(missing)}")
    return holds(assumption, f"{where} lists {', '.join(known)}")


def _needed_statuses(flow: FlowConfig) -> list[str]:
    """The flow's Cancel Status, the statuses it writes, and rejected (rejected_count asks for it)."""
    status = flow.get_data.cancel_status
    needed = [] if status is CancelStatus.ORDER_TRANSACTION else [status.value]
    if status.writes_status:
        needed.append(flow.write_omnitron.next_state.value)
    return list(dict.fromkeys([*needed, REJECTED_STATUS]))


# -- order transactions ------------------------------------------------------------------------------


def transaction_findings(omnitron: OmnitronClient, flow: FlowConfig, sample: Sample) -> list[Finding]:
    settings, listed = flow.get_data, sample.transactions
    probes: list[tuple[TransactionQuery, Matches | None]] = [
        (TransactionQuery(transaction_type=NO_SUCH_VALUE), _shows("transaction_type", RETURN_TRANSACTION)),
        (TransactionQuery(channel_type=NO_SUCH_VALUE), None),
        (TransactionQuery(pk=NO_SUCH_PK), None),  # whether a transaction is mapped, when its retrieve does not say
    ]
    if settings.channel_ids:
        probes.append((TransactionQuery(channel_ids=(NO_SUCH_PK,)), None))
    findings = []
    for probe, matches in probes:
        name = _filter_name(probe.params())
        shown = f"{name}={probe.params()[name]}"
        count = partial(omnitron.transaction_count, probe)
        findings.append(_filter(f"transaction filter {name} honoured", shown, count, listed, matches, "transaction"))
    return [
        *findings,
        mapped_filter(omnitron, listed),
        transaction_order_field(sample),
        transaction_retrieve(omnitron, listed),
    ]


def mapped_filter(omnitron: OmnitronClient, listed: Sequence[Entry]) -> Finding:
    """A yes-or-no filter has no impossible value: its two answers must split the list."""
    name = _filter_name(TransactionQuery(mapped=False).params())
    assumption = f"transaction filter {name} honoured"
    misfit = next((entry for entry in listed if entry.get("integration_mapping")), None)
    if misfit is not None:
        return broken(assumption, f"transaction {misfit.get('pk')} was listed as unmapped but shows a mapping")
    try:
        unmapped, mapped, every = (
            omnitron.transaction_count(TransactionQuery(mapped=flag)) for flag in (False, True, None)
        )
    except OmnitronError as exc:
        return failed_call(assumption, exc)
    if not every:
        return unchecked(assumption, "no order transaction in Omnitron to split")
    said = f"{unmapped} unmapped and {mapped} mapped of {every} transactions"
    return holds(assumption, said) if (unmapped or 0) + (mapped or 0) == every else broken(assumption, said)


def transaction_order_field(sample: Sample) -> Finding:
    field = TRANSACTION_ORDER_FIELD
    assumption = f"transactions lead to their order ({field!r})"
    if sample.failure is not None:
        return failed_call(assumption, sample.failure)
    if not sample.transactions:
        return unchecked(assumption, "the flow's transaction list is empty now")
    for transaction in sample.transactions:
        if transaction_order(transaction) is None:
            return broken(
                assumption,
                f"transaction {transaction.get('pk')} shows {', '.join(transaction)}: no order pk in {field!r}",
            )
    return holds(assumption, f"the {len(sample.transactions)} transaction(s) listed have an order pk in {field!r}")


def transaction_retrieve(omnitron: OmnitronClient, listed: Sequence[Entry]) -> Finding:
    assumption = "a transaction can be read by its pk"
    if not listed:
        return unchecked(assumption, "no transaction listed to read")
    pk = listed[0].get("pk")
    if not isinstance(pk, int):
        return unchecked(assumption, "the first transaction listed has no pk")
    path = "/" + ORDER_TRANSACTION_PATH.format(transaction_pk=pk)
    try:
        transaction = omnitron.order_transaction(pk)
    except OmnitronError as exc:
        return failed_call(assumption, exc)
    if not isinstance(transaction, dict) or transaction.get("pk") != pk:
        return broken(assumption, f"GET {path} answered no transaction {pk}")
    return holds(assumption, f"GET {path} answered transaction {pk}")


def _shows(field: str, value: str) -> Matches:
    """An entry matches when it shows `field` with `value`, or does not show the field."""
    return lambda entry: field not in entry or entry[field] == value


def _dig(entry: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        entry = entry.get(part) if isinstance(entry, dict) else None
    return entry
