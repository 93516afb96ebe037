"""The payments core without NATS or YooKassa: what a status means for the record, which facts
to tell, and the refund arithmetic per line."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
from hypothesis import given, settings
from hypothesis import strategies as st

from libs import money
from libs.contracts import (
    Contact,
    DeliveryChoice,
    OrderLine,
    PaymentAuthorized,
    PaymentCanceled,
    PaymentFailed,
    PaymentPending,
    PaymentRefunded,
    PaymentSucceeded,
    Reserved,
    ReservedLine,
)
from services.payments import core
from services.payments.core import PaymentRecord, Refund

NOW = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
EXPIRES = NOW + timedelta(minutes=15)
TEA, MUG = ReservedLine("TEA", 3, 99000), ReservedLine("MUG", 1, 45050)


def record(**changes: Any) -> PaymentRecord:
    base = PaymentRecord(
        order_id="o1",
        amount=3 * 99000 + 45050,
        lines=(TEA, MUG),
        expires_at=EXPIRES,
        contact=Contact(name="Анна", phone="+79001234567"),
        status="succeeded",
        payment_id="pay-1",
        confirmation_url="https://pay/1",
    )
    return msgspec.structs.replace(base, **changes)


COURIER = DeliveryChoice(method_id="courier-msk", price=30000, city="Москва")
TITLES = {"TEA": "Чай", "MUG": "Кружка", "delivery:courier-msk": "Курьер по Москве"}
PREPAID = core.ReceiptConfig(4, "commodity", "full_prepayment")


def couriered(**changes: Any) -> PaymentRecord:
    """The order of `record()` brought by a courier for 300 ₽."""
    return record(amount=3 * 99000 + 45050 + 30000, delivery=COURIER, **changes)


def items_sum(receipt: dict[str, Any]) -> int:
    """What a receipt's items add up to, in kopecks (YooKassa refuses one that is not the
    payment's amount)."""
    return sum(
        int(float(item["quantity"])) * money.kopecks(item["amount"]["value"])
        for item in receipt["items"]
    )


def payment(status: str, **more: Any) -> dict[str, Any]:
    return {
        "id": "pay-1",
        "status": status,
        "amount": {"value": "3420.50", "currency": "RUB"},
        "metadata": {"order_id": "o1"},
        **more,
    }


# the record's story ------------------------------------------------------------------------------


def test_a_reservation_becomes_a_record_being_created() -> None:
    reserved = Reserved("o1", (TEA, MUG), 342050, EXPIRES, NOW)
    made = core.new_record(reserved, Contact(phone="+79001234567"), NOW)
    assert (made.order_id, made.amount, made.lines, made.expires_at) == (
        "o1",
        342050,
        (TEA, MUG),
        EXPIRES,
    )
    assert (made.status, made.payment_id, made.told, made.updated_at) == ("creating", "", (), NOW)
    assert made.contact.phone == "+79001234567"


def test_a_created_payment_is_pending_unless_another_instance_moved_it_on() -> None:
    answer = {"id": "pay-9", "confirmation": {"confirmation_url": "https://pay/9"}}
    fresh = core.created(record(status="creating", payment_id=""), answer)
    assert (fresh.status, fresh.payment_id, fresh.confirmation_url) == (
        "pending",
        "pay-9",
        "https://pay/9",
    )
    moved = core.created(record(status="waiting_for_capture"), answer)
    assert moved.status == "waiting_for_capture"
    assert core.created(record(status="creating"), {"id": "pay-9"}).confirmation_url == ""


def test_pending_is_told_once_and_only_with_a_payment() -> None:
    assert core.pending(record(status="creating", payment_id=""), NOW) is None
    tell = core.pending(record(status="pending"), NOW)
    assert tell is not None
    assert (tell.kind, tell.msg_id) == ("pending", "pay-1:pending")
    assert tell.fact == PaymentPending("o1", "pay-1", 342050, "https://pay/1", EXPIRES, NOW)
    told = core.told(record(status="pending"), "pending")
    assert core.pending(told, NOW) is None
    assert core.told(told, "pending") == told, "told once"


def test_a_refused_payment_fails_the_order() -> None:
    tell = core.refused(record(status="creating", payment_id=""), "invalid_request", NOW)
    assert (tell.kind, tell.msg_id) == ("failed", "failed:o1")
    assert tell.fact == PaymentFailed("o1", "", "invalid_request", NOW)
    assert core.failed(record(status="creating")).status == "failed"


def test_what_each_yookassa_status_tells() -> None:
    open_ = record(status="pending")
    held = core.observed(open_, payment("waiting_for_capture"), NOW)
    assert held is not None
    assert (held.kind, held.msg_id) == ("authorized", "pay-1:waiting_for_capture")
    assert held.fact == PaymentAuthorized("o1", "pay-1", 342050, NOW)
    paid = core.observed(open_, payment("succeeded"), NOW)
    assert paid is not None and (paid.kind, paid.msg_id) == ("succeeded", "pay-1:succeeded")
    assert paid.fact == PaymentSucceeded("o1", "pay-1", 342050, NOW)
    details = {"party": "payment_network", "reason": "general_decline"}
    declined = core.observed(open_, payment("canceled", cancellation_details=details), NOW)
    assert declined is not None and declined.kind == "canceled"
    assert declined.fact == PaymentCanceled(
        "o1", "pay-1", "general_decline", NOW, party="payment_network"
    )
    bare = core.observed(open_, payment("canceled"), NOW)
    assert bare is not None and bare.fact == PaymentCanceled("o1", "pay-1", "canceled", NOW)
    assert core.observed(open_, payment("pending"), NOW) is None, "nothing new to tell"
    assert core.observed(open_, payment("refunded?"), NOW) is None


def test_a_status_is_told_once() -> None:
    told = record(status="succeeded", told=("pending", "succeeded"))
    assert core.observed(told, payment("succeeded"), NOW) is None


def test_what_a_status_makes_the_record() -> None:
    open_ = record(status="pending", told=("pending",))
    held = core.seen(open_, "waiting_for_capture")
    assert (held.status, held.told) == ("waiting_for_capture", ("pending", "waiting_for_capture"))
    paid = core.seen(held, "succeeded")
    assert paid.told == ("pending", "waiting_for_capture", "succeeded")
    assert core.seen(paid, "succeeded") == paid, "seen twice, told once"
    still = core.seen(record(status="creating", told=()), "pending")
    assert (still.status, still.told) == ("pending", ()), "pending is told by `pending`"
    assert "mystery" not in core.RECORDED
    assert core.seen(open_, "mystery") == open_


def test_the_reconciler_asks_about_quiet_open_payments_only() -> None:
    since = NOW - timedelta(minutes=5)
    assert core.quiet(record(status="pending", updated_at=since - timedelta(seconds=1)), since)
    assert core.quiet(record(status="creating", updated_at=None), since)
    assert not core.quiet(record(status="pending", updated_at=NOW), since)
    for done in ("succeeded", "canceled", "failed"):
        assert not core.quiet(record(status=done, updated_at=None), since)


def test_what_yookassa_says_is_checked_against_the_order() -> None:
    mine = record(amount=342050)
    assert core.mismatch(mine, payment("succeeded")) is None
    assert core.mismatch(mine, {**payment("succeeded"), "id": "pay-2"}) is not None
    cheaper = {**payment("succeeded"), "amount": {"value": "1.00", "currency": "RUB"}}
    assert "amount" in (core.mismatch(mine, cheaper) or "")
    dollars = {**payment("succeeded"), "amount": {"value": "3420.50", "currency": "USD"}}
    assert "currency" in (core.mismatch(mine, dollars) or "")
    other = {**payment("succeeded"), "metadata": {"order_id": "o2"}}
    assert "order_id" in (core.mismatch(mine, other) or "")
    assert core.claimed_mismatch(payment("succeeded"), payment("succeeded")) is None
    claimed = {**payment("succeeded"), "amount": {"value": "3420.5", "currency": "RUB"}}
    assert core.claimed_mismatch(claimed, payment("succeeded")) is None, "the same money"
    assert core.claimed_mismatch(cheaper, payment("succeeded")) is not None


def test_settlement_only_on_the_inventorys_answer() -> None:
    assert not core.settles("committed", two_stage=False)
    assert core.settles("committed", two_stage=True)
    assert core.settles("commit_failed", two_stage=False)
    assert core.settlement("committed", "waiting_for_capture", True) == "capture"
    assert core.settlement("committed", "succeeded", True) is None
    assert core.settlement("commit_failed", "waiting_for_capture", True) == "cancel"
    assert core.settlement("commit_failed", "succeeded", False) == "refund"
    assert core.settlement("commit_failed", "canceled", True) is None


def test_params_in_yookassas_money() -> None:
    config = core.ReceiptConfig(1, "commodity", "full_payment")
    params = core.create_params(record(status="creating"), "https://back", {}, False, config)
    assert params["amount"] == {"value": "3420.50", "currency": "RUB"}
    items = params["receipt"]["items"]
    assert [i["amount"]["value"] for i in items] == ["990.00", "450.50"]
    assert [i["quantity"] for i in items] == ["3.00", "1.00"]


# refunds -----------------------------------------------------------------------------------------


def test_refund_by_lines_then_the_rest() -> None:
    """As tests/test_payments.py does it end to end: one of three back, then the rest."""
    order = record(lines=(ReservedLine("FEW", 3, 99000),), amount=297000)
    one = core.refund_for(order, (OrderLine("FEW", 1, 99000),))
    assert one == Refund(99000, (OrderLine("FEW", 1, 99000),), (OrderLine("FEW", 1, 99000),))
    order = core.refunded(order, one, "re-1")
    assert core.refunded(order, one, "re-1") == order, "a refund is counted once"
    rest = core.refund_for(order, None)
    assert rest == Refund(198000, (OrderLine("FEW", 2, 99000),), (OrderLine("FEW", 2, 99000),))
    order = core.refunded(order, rest, "re-2")
    assert (order.refunded, order.refund_ids) == (297000, ("re-1", "re-2"))
    assert core.not_returned(order) == ()
    assert core.refund_for(order, None) is None, "nothing left to give back"
    assert core.refund_for(order, (OrderLine("FEW", 1, 99000),)) is None


def test_the_money_only() -> None:
    """The stock was gone: the money goes back, no goods; the receipt lists the whole order."""
    refund = core.refund_for(record(), ())
    everything = (OrderLine("TEA", 3, 99000), OrderLine("MUG", 1, 45050))
    assert refund == Refund(342050, (), everything)


def test_a_request_never_refunds_more_than_was_paid_for_a_line() -> None:
    order = record()
    too_many = core.refund_for(order, (OrderLine("MUG", 5, 45050),))
    assert too_many is not None and too_many.lines == (OrderLine("MUG", 1, 45050),)
    assert too_many.amount == 45050
    dearer = core.refund_for(order, (OrderLine("TEA", 1, 150000),))
    assert dearer is not None and dearer.amount == 99000, "at most the price paid"
    cheaper = core.refund_for(order, (OrderLine("TEA", 2, 50000),))
    assert cheaper is not None and cheaper.amount == 100000, "a lower price is the shop's call"
    assert core.refund_for(order, (OrderLine("CUP", 1, 1000),)) is None, "not in the order"
    assert core.refund_for(order, (OrderLine("TEA", 0, 99000),)) is None, "none of it"
    assert core.refund_for(order, (OrderLine("TEA", -2, 99000),)) is None
    assert core.refund_for(order, (OrderLine("TEA", 1, 0),)) is None, "goods without money"
    assert core.refund_for(order, (OrderLine("TEA", 1, -500),)) is None
    back = core.refunded(order, too_many, "re-1")
    assert core.refund_for(back, (OrderLine("MUG", 1, 45050),)) is None, "already back"


def test_refund_params() -> None:
    order = record()
    refund = core.refund_for(order, (OrderLine("TEA", 2, 99000),))
    assert refund is not None
    bare = core.refund_params(order, refund, "returned", {}, None)
    assert bare == {
        "payment_id": "pay-1",
        "amount": {"value": "1980.00", "currency": "RUB"},
        "description": "Возврат по заказу №o1: returned",
    }
    config = core.ReceiptConfig(1, "commodity", "full_payment")
    with_receipt = core.refund_params(order, refund, "returned", {"TEA": "Сенча"}, config)
    (item,) = with_receipt["receipt"]["items"]
    assert (item["description"], item["quantity"], item["amount"]["value"]) == (
        "Сенча",
        "2.00",
        "990.00",
    )
    tell = core.refund_fact(order, refund, "re-7", "returned", NOW)
    assert (tell.kind, tell.msg_id) == ("refunded", "refund:re-7")
    assert tell.fact == PaymentRefunded(
        "o1", "pay-1", "re-7", 198000, (OrderLine("TEA", 2, 99000),), "returned", NOW
    )


SKUS = ("A", "B")
order_lines = st.lists(
    st.builds(
        ReservedLine,
        st.sampled_from(SKUS),
        st.integers(min_value=1, max_value=5),
        st.integers(min_value=1, max_value=200_000),
    ),
    min_size=1,
    max_size=4,
)
asked_lines = st.lists(
    st.builds(
        OrderLine,
        st.sampled_from(SKUS) | st.just("Z"),
        st.integers(min_value=1, max_value=7),
        st.integers(min_value=1, max_value=300_000),
    ),
    min_size=1,
    max_size=4,
)
# Some refunds by lines, then everything left (None) or the money only (()).
requests = st.builds(
    lambda some, last: [*some, last],
    st.lists(asked_lines.map(tuple), max_size=5),
    st.none() | st.just(()),
)


@settings(max_examples=400, deadline=None)
@given(order_lines, st.integers(min_value=0, max_value=50_000), requests)
def test_refunds_never_give_back_more_than_was_paid(
    lines: list[ReservedLine], delivery: int, asked: list[tuple[OrderLine, ...] | None]
) -> None:
    order = record(
        lines=tuple(lines), amount=sum(ln.qty * ln.unit_price for ln in lines) + delivery
    )
    ordered = Counter[str]()
    paid: dict[str, int] = {}
    for bought in lines:
        ordered[bought.sku] += bought.qty
        paid[bought.sku] = max(paid.get(bought.sku, 0), bought.unit_price)
    given_back = 0
    for n, request in enumerate(asked):
        left = order.amount - order.refunded
        refund = core.refund_for(order, request)
        if refund is None:
            continue
        assert isinstance(refund.amount, int) and 0 < refund.amount <= left
        for back in refund.lines:
            assert back.qty > 0 and 0 <= back.unit_price <= paid[back.sku]
        if request:  # by lines: the money is what those lines cost, as far as any is left
            assert refund.amount == min(sum(ln.qty * ln.unit_price for ln in refund.lines), left)
        else:  # everything left, or the money only
            assert refund.amount == left
        assert refund.receipt == (
            refund.lines or tuple(OrderLine(*msgspec.structs.astuple(ln)) for ln in lines)
        )
        order = core.refunded(order, refund, f"re-{n}")
        given_back += refund.amount
        returned = Counter[str]()
        for back in order.returned:
            returned[back.sku] += back.qty
        assert all(returned[sku] <= ordered[sku] for sku in returned), "no line back twice"
        assert order.refunded == given_back <= order.amount, "the sums add up"
        if request is None:
            assert order.refunded == order.amount and core.not_returned(order) == ()


def test_the_settlement_receipt_on_delivery() -> None:
    """54-FZ: with full prepayment, the goods handed over are settled by a second receipt, for
    what was not returned; none in other modes, none when everything came back."""
    prepaid = core.ReceiptConfig(1, "commodity", "full_prepayment")
    titles = {"TEA": "Чай", "MUG": "Кружка"}
    order = record()
    one_back = core.refund_for(order, (OrderLine("TEA", 1, 99000),))
    assert one_back is not None
    order = core.refunded(order, one_back, "re-1")
    receipt = core.settlement_receipt(order, titles, prepaid)
    assert receipt is not None
    assert (receipt["type"], receipt["payment_id"], receipt["send"]) == ("payment", "pay-1", True)
    assert [(i["description"], i["quantity"], i["payment_mode"]) for i in receipt["items"]] == [
        ("Чай", "2.00", "full_payment"),
        ("Кружка", "1.00", "full_payment"),
    ]
    assert receipt["settlements"] == [
        {"type": "prepayment", "amount": {"value": "2430.50", "currency": "RUB"}}
    ]
    assert receipt["customer"]["phone"] == "79001234567"
    paid_in_full = core.ReceiptConfig(1, "commodity", "full_payment")
    assert core.settlement_receipt(order, titles, paid_in_full) is None  # settled at payment
    everything = core.refund_for(order, None)
    assert everything is not None
    assert (
        core.settlement_receipt(core.refunded(order, everything, "re-2"), titles, prepaid) is None
    )
    assert core.settlement_receipt(record(status="canceled"), titles, prepaid) is None


# the delivery: its own line in every receipt, and back only with everything --------------------


def test_the_reservations_delivery_is_kept_with_the_record() -> None:
    reserved = Reserved("o1", (TEA, MUG), 372050, EXPIRES, NOW, delivery=COURIER)
    assert core.new_record(reserved, Contact(), NOW).delivery == COURIER
    old = msgspec.json.decode(
        msgspec.json.encode(record()).replace(b',"delivery":null', b""), type=PaymentRecord
    )
    assert (old.delivery, old.delivery_back) == (None, False), "a stored record still decodes"


def test_the_payments_receipt_has_the_delivery_as_a_service_line() -> None:
    params = core.create_params(couriered(status="creating"), "https://back", TITLES, True, PREPAID)
    goods, delivery = params["receipt"]["items"][:2], params["receipt"]["items"][2]
    assert delivery == {
        "description": "Доставка: Курьер по Москве",
        "quantity": "1.00",
        "amount": {"value": "300.00", "currency": "RUB"},
        "vat_code": 4,
        "payment_subject": "service",
        "payment_mode": "full_prepayment",
    }
    assert [i["payment_subject"] for i in goods] == ["commodity", "commodity"]
    assert items_sum(params["receipt"]) == 372050 == money.kopecks(params["amount"]["value"])
    gone = core.create_params(couriered(status="creating"), "https://back", {}, True, PREPAID)
    assert gone["receipt"]["items"][2]["description"] == "Доставка", "the method left the catalog"
    free = record(delivery=DeliveryChoice(method_id="pickup", price=0))
    plain = core.create_params(free, "https://back", TITLES, True, PREPAID)
    assert len(plain["receipt"]["items"]) == 2, "a free delivery is no line of the receipt"


def test_a_full_refund_gives_the_delivery_back_with_its_line() -> None:
    order = couriered()
    everything = core.refund_for(order, None)
    assert everything is not None
    assert (everything.amount, everything.delivery) == (372050, 30000)
    params = core.refund_params(order, everything, "cancelled", TITLES, PREPAID)
    assert params["receipt"]["items"][-1]["description"] == "Доставка: Курьер по Москве"
    assert items_sum(params["receipt"]) == 372050
    tell = core.refund_fact(order, everything, "re-1", "cancelled", NOW)
    assert isinstance(tell.fact, PaymentRefunded) and tell.fact.delivery == COURIER
    done = core.refunded(order, everything, "re-1")
    assert done.delivery_back and core.refund_for(done, None) is None
    money_only = core.refund_for(order, ())
    assert money_only is not None and money_only.delivery == 30000, "the stock was gone"
    params = core.refund_params(order, money_only, "stock_gone", TITLES, PREPAID)
    assert items_sum(params["receipt"]) == money_only.amount == 372050


def test_a_return_of_some_goods_leaves_the_delivery_paid_until_the_rest_goes_back() -> None:
    order = couriered()
    one = core.refund_for(order, (OrderLine("TEA", 1, 99000),))
    assert one is not None and (one.amount, one.delivery) == (99000, 0)
    told = core.refund_fact(order, one, "re-1", "returned", NOW).fact
    assert isinstance(told, PaymentRefunded) and told.delivery is None
    params = core.refund_params(order, one, "returned", TITLES, PREPAID)
    assert [i["description"] for i in params["receipt"]["items"]] == ["Чай"]
    order = core.refunded(order, one, "re-1")
    assert not order.delivery_back
    rest = core.refund_for(order, None)
    assert rest is not None and (rest.amount, rest.delivery) == (273050, 30000)
    params = core.refund_params(order, rest, "cancelled", TITLES, PREPAID)
    assert items_sum(params["receipt"]) == 273050


def test_the_settlement_receipt_lists_the_delivery() -> None:
    order = couriered()
    one = core.refund_for(order, (OrderLine("TEA", 1, 99000),))
    assert one is not None
    receipt = core.settlement_receipt(core.refunded(order, one, "re-1"), TITLES, PREPAID)
    assert receipt is not None
    assert [(i["description"], i["payment_subject"], i["payment_mode"]) for i in receipt["items"]][
        -1
    ] == ("Доставка: Курьер по Москве", "service", "full_payment")
    settled = receipt["settlements"][0]["amount"]
    assert items_sum(receipt) == money.kopecks(settled["value"]) == 273050


@settings(max_examples=200, deadline=None)
@given(
    st.lists(  # one line per product, as the cart makes them
        st.builds(
            ReservedLine,
            st.sampled_from(SKUS),
            st.integers(min_value=1, max_value=5),
            st.integers(min_value=1, max_value=200_000),
        ),
        min_size=1,
        max_size=2,
        unique_by=lambda line: line.sku,
    ),
    st.integers(min_value=0, max_value=50_000),
    st.lists(st.lists(st.integers(min_value=0, max_value=3), min_size=1, max_size=3), max_size=3),
)
def test_every_receipt_adds_up_to_its_money(
    lines: list[ReservedLine], price: int, returns: list[list[int]]
) -> None:
    """Returns of some lines at the price paid, then everything left: each refund's receipt,
    and the payment's, add up to their money, the delivery's line with them when it is theirs."""
    chosen = DeliveryChoice(method_id="courier-msk", price=price)
    goods = sum(ln.qty * ln.unit_price for ln in lines)
    order = record(lines=tuple(lines), amount=goods + price, delivery=chosen)
    paid = core.create_params(order, "https://back", TITLES, True, PREPAID)
    assert items_sum(paid["receipt"]) == order.amount
    asked: list[tuple[OrderLine, ...] | None] = [
        tuple(OrderLine(ln.sku, n, ln.unit_price) for ln, n in zip(lines, counts, strict=False))
        for counts in returns
    ]
    for n, request in enumerate([*asked, None]):
        refund = core.refund_for(order, request)
        if refund is None:
            continue
        params = core.refund_params(order, refund, "returned", TITLES, PREPAID)
        assert items_sum(params["receipt"]) == refund.amount
        assert refund.delivery == (price if request is None else 0)
        order = core.refunded(order, refund, f"re-{n}")
    assert order.refunded == order.amount


# the way to pay: card, SBP, on receipt ------------------------------------------------------------


def test_only_a_card_payment_is_held_first() -> None:
    """PAYMENTS_CAPTURE=two_stage holds card payments only: YooKassa charges SBP at once, and
    money paid on receipt is in the till."""
    for method, held in (("card", True), ("sbp", False), ("cash", False)):
        assert core.two_stage(record(method=method), configured=True) is held, method
        assert core.two_stage(record(method=method), configured=False) is False, method


def test_an_order_paid_on_receipt_is_due_and_has_no_payment_to_create() -> None:
    reserved = Reserved("o1", (TEA, MUG), 342050, EXPIRES, NOW)
    cash = core.new_record(reserved, Contact(), NOW, "cash")
    assert (cash.method, cash.status, cash.payment_id) == ("cash", "due", "")
    assert not core.quiet(cash, NOW + timedelta(days=1)), "the reconciler has nothing to ask"
    assert not core.refundable(cash), "no money taken yet"
    sbp = core.new_record(reserved, Contact(), NOW, "sbp")
    assert (sbp.method, sbp.status) == ("sbp", "creating")
    assert core.new_record(reserved, Contact(), NOW).method == "card"


def test_cash_received_is_in_the_till_then_told_once() -> None:
    due = record(method="cash", status="due", payment_id="", told=())
    assert core.cash_paid(due, NOW) is None, "the record says it first"
    paid = core.in_till(due)
    assert (paid.status, paid.payment_id, paid.told) == ("succeeded", "cash-o1", ())
    assert core.in_till(paid) == paid
    assert core.refundable(paid)
    tell = core.cash_paid(paid, NOW)
    assert tell is not None
    assert (tell.kind, tell.msg_id) == ("succeeded", "cash-o1:succeeded")
    assert tell.fact == PaymentSucceeded("o1", "cash-o1", 342050, NOW)
    assert core.cash_paid(core.told(paid, "succeeded"), NOW) is None, "told already"
    card = record(status="succeeded")
    assert core.cash_paid(card, NOW) is None, "a card order's money comes from YooKassa"
    assert core.in_till(record(status="pending")) == record(status="pending")


def test_an_sbp_payment_is_asked_for_sbp_and_a_card_one_for_nothing_in_particular() -> None:
    asked = record(method="sbp", status="creating")
    sbp = core.create_params(asked, "https://back", {}, True, None)
    assert sbp["payment_method_data"] == {"type": "sbp"}
    assert sbp["capture"] is True
    card = core.create_params(record(status="creating"), "https://back", {}, False, None)
    assert "payment_method_data" not in card, "the customer chooses on YooKassa's page"


def test_the_settlement_of_an_order_paid_on_receipt() -> None:
    """Its "payment" is the record: committed moves nothing; refused or cancelled once paid
    gives the money back (over the counter); refused while still due, nothing to give back."""
    paid = core.in_till(record(method="cash", status="due", payment_id=""))
    two_stage = core.two_stage(paid, configured=True)
    assert not core.settles("committed", two_stage)
    for answer in ("commit_failed", "cancelled"):
        assert core.settlement(answer, paid.status, two_stage) == "refund"
        assert core.settlement(answer, "due", two_stage) is None
    refund = core.refund_for(paid, ())
    assert refund is not None and refund.amount == paid.amount


def test_an_order_paid_on_receipt_has_no_settlement_receipt_at_yookassa() -> None:
    """Its money never went through YooKassa: a receipt there for `cash-<order>` is refused
    (and the delivered fact would be retried until dead-lettered)."""
    paid = core.in_till(record(method="cash", status="due", payment_id=""))
    assert core.settlement_receipt(paid, TITLES, PREPAID) is None
    assert core.settlement_receipt(record(method="sbp"), TITLES, PREPAID) is not None
