"""The shop's delivery methods: priced for a cart (libs.delivery), read from the catalog file's
`delivery` section with the line of any bad value, kept by the inventory (idempotent by value),
and served from memory to the bot through the catalog's read model."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest
from nats.aio.client import Client
from nats.js import JetStreamContext

from libs import delivery
from libs.catalog_view import CatalogView
from libs.contracts import (
    CountStock,
    DeliveryChoice,
    DeliveryMethod,
    DeliverySet,
    OrderLine,
    Rejected,
    Reserved,
    SetDelivery,
    UpsertCategory,
    UpsertProduct,
)
from services.inventory import catalog
from services.inventory.core import EMPTY, CommandRefused, Reserve, State, decide, evolve, fold
from tests.harness import CATALOG, ServiceProcess, inventory_ready, wait_until

Start = Callable[..., ServiceProcess]

NOW = datetime(2026, 12, 1, 10, tzinfo=UTC)
PICKUP = DeliveryMethod(id="pickup", title="Самовывоз", kind="pickup", price=0, address="ул. 1")
COURIER = DeliveryMethod(
    id="courier",
    title="Курьер",
    kind="courier",
    price=300_00,
    free_from=3000_00,
    cities=("Москва", "Королёв"),
)
POST = DeliveryMethod(
    id="post", title="Почта", kind="post", price=350_00, base_weight=1000, per_kg=70_00
)


def test_prices_for_a_cart() -> None:
    assert delivery.price(PICKUP, 500_00) == 0
    assert delivery.price(COURIER, 2999_99) == 300_00
    assert delivery.price(COURIER, 3000_00) == 0  # free from the threshold, inclusive
    assert delivery.price(POST, 500_00, grams=1000) == 350_00  # the base weight is covered
    assert delivery.price(POST, 500_00, grams=1001) == 420_00  # a started kilogram counts
    assert delivery.price(POST, 500_00, grams=3000) == 490_00
    lines = (OrderLine("A", 3, 100_00), OrderLine("B", 1, 50_00), OrderLine("C", 2, 1))
    assert delivery.weight(lines, {"A": 250, "B": 1200}) == 1950  # C weighs nothing here


def test_where_a_courier_goes() -> None:
    assert delivery.serves(COURIER, "москва") and delivery.serves(COURIER, " г. Москва ")
    assert delivery.serves(COURIER, "Королев")  # ё or е, as people type it
    assert not delivery.serves(COURIER, "Тверь")
    assert delivery.serves(POST, "Тверь") and delivery.serves(PICKUP, "Тверь")
    assert not delivery.needs_address(PICKUP) and delivery.needs_address(POST)


def test_a_delivery_is_named_where_a_product_would_be() -> None:
    """Receipts and the Sales ledger name it `delivery:<method id>`, never a product's SKU."""
    assert delivery.as_sku("courier-msk") == "delivery:courier-msk"
    assert delivery.titles([PICKUP, COURIER]) == {
        "delivery:pickup": "Самовывоз",
        f"delivery:{COURIER.id}": COURIER.title,
    }


def test_the_demo_shop_offers_pickup_a_courier_and_the_post() -> None:
    *_, last = catalog.load(catalog.DEMO_CATALOG)
    assert isinstance(last, SetDelivery)
    assert [(m.kind, m.price) for m in last.methods] == [
        ("pickup", 0),
        ("courier", 300_00),
        ("post", 350_00),
    ]
    assert last.min_order == 0 and last.methods[0].address and last.methods[0].hours
    products = [c for c in catalog.load(catalog.DEMO_CATALOG) if isinstance(c, UpsertProduct)]
    assert all(p.weight > 0 for p in products)


DELIVERY = """
delivery:
  min_order: 500
  methods:
    - {id: pickup, title: Самовывоз, kind: pickup, address: "ул. Ленина, 1", hours: "10-20"}
    - id: courier
      title: Курьер
      kind: courier
      price: "300.50"
      free_from: 3000
      cities: [Москва]
"""


def test_the_catalog_files_delivery_section(tmp_path: Path) -> None:
    path = tmp_path / "catalog.yaml"
    path.write_text(CATALOG + DELIVERY)
    *_, last = catalog.load(path)
    assert last == SetDelivery(
        (
            DeliveryMethod(
                id="pickup",
                title="Самовывоз",
                kind="pickup",
                price=0,
                address="ул. Ленина, 1",
                hours="10-20",
            ),
            DeliveryMethod(
                id="courier",
                title="Курьер",
                kind="courier",
                price=300_50,
                free_from=3000_00,
                cities=("Москва",),
            ),
        ),
        500_00,
    )
    path.write_text(CATALOG)  # no section: the shop's delivery stays as it is
    assert not any(isinstance(c, SetDelivery) for c in catalog.load(path))


@pytest.mark.parametrize(
    ("good", "bad", "line", "why"),
    [
        ('price: "300.50"', 'price: "300.505"', 17, "more than two decimals"),
        ('price: "300.50"', "price: lots", 17, "price"),
        ("kind: courier", "kind: drone", 16, "kind"),
        ("id: courier", "id: pickup", 14, "listed twice"),
    ],
)
def test_a_bad_delivery_value_is_refused_with_its_line(
    tmp_path: Path, good: str, bad: str, line: int, why: str
) -> None:
    path = tmp_path / "catalog.yaml"
    path.write_text((CATALOG + DELIVERY).replace(good, bad))
    with pytest.raises(catalog.CatalogError) as refused:
        catalog.load(path)
    assert f"{path}:{line}:" in str(refused.value) and why in str(refused.value)


def test_the_inventory_keeps_the_methods_once() -> None:
    command = SetDelivery((PICKUP, COURIER), 500_00)
    (event,) = decide(EMPTY, command, NOW)
    assert event == DeliverySet(methods=(PICKUP, COURIER), min_order=500_00, at=NOW)
    state = evolve(EMPTY, event)
    assert (state.delivery, state.min_order) == ((PICKUP, COURIER), 500_00)
    assert decide(state, command, NOW) == []  # the same again: nothing
    assert decide(state, SetDelivery((COURIER,), 500_00), NOW) != []
    with pytest.raises(CommandRefused, match="listed twice"):
        decide(state, SetDelivery((PICKUP, PICKUP)), NOW)
    negative = DeliveryMethod(id="x", title="X", kind="post", price=-1)
    with pytest.raises(CommandRefused, match="price"):
        decide(state, SetDelivery((negative,)), NOW)
    assert fold(EMPTY, [event]) == state


async def test_the_methods_reach_the_bot_through_the_read_model(
    nc: Client,
    js: JetStreamContext,
    nats_url: str,
    services: Start,
    tmp_path: Path,
) -> None:
    path = tmp_path / "catalog.yaml"
    path.write_text(CATALOG + DELIVERY)
    services("inventory", nats_url, catalog_file=path)
    await wait_until(lambda: inventory_ready(js), what="inventory ready")
    view = await CatalogView.open(nc, js)
    try:
        await wait_until(lambda: len(view.delivery().methods) == 2, what="the methods seen")
        shown = view.delivery()
        assert [m.id for m in shown.methods] == ["pickup", "courier"]
        assert shown.min_order == 500_00 and shown.methods[1].price == 300_50
        assert [p.sku for p in view.products("goods")] == ["LAST", "MANY", "FEW"]
    finally:
        await view.close()


# The inventory prices the delivery again, as it does the goods -------------------------------
def shop_with_delivery() -> State:
    state = fold(EMPTY, decide(EMPTY, UpsertCategory("tea", "Tea"), NOW))
    for command in (
        UpsertProduct("A", "Tea A", 1000_00, "tea", weight=600),
        CountStock("A", 10),
        SetDelivery((PICKUP, COURIER, POST), min_order=500_00),
    ):
        state = fold(state, decide(state, command, NOW))
    return state


def reserve(qty: int, chosen: DeliveryChoice | None, total: int | None = None) -> Reserve:
    goods = qty * 1000_00
    price = chosen.price if chosen else 0
    lines = (OrderLine("A", qty, 1000_00),)
    return Reserve("o1", lines, goods + price if total is None else total, 600, chosen)


def answer(command: Reserve) -> Reserved | Rejected:
    (event,) = decide(shop_with_delivery(), command, NOW)
    assert isinstance(event, Reserved | Rejected)
    return event


def test_the_inventory_prices_the_delivery_again_and_refuses_a_forged_one() -> None:
    by_post = DeliveryChoice(method_id="post", price=420_00)  # 2 × 600 g: one started kg over
    reserved = answer(reserve(2, by_post))
    assert isinstance(reserved, Reserved)
    assert (reserved.total, reserved.delivery) == (2000_00 + 420_00, by_post)
    free = DeliveryChoice(method_id="courier", price=0, city="Москва")
    assert isinstance(answer(reserve(3, free)), Reserved)  # 3 000 ₽: free from the threshold

    def refused(command: Reserve) -> str:
        rejected = answer(command)
        assert isinstance(rejected, Rejected), rejected
        return rejected.reason

    assert refused(reserve(2, DeliveryChoice(method_id="post", price=350_00))) == "delivery_price"
    assert refused(reserve(1, DeliveryChoice(method_id="drone", price=0))) == "delivery_unknown"
    courier = DeliveryChoice(method_id="courier", price=300_00, city="Тверь")
    assert refused(reserve(1, courier)) == "delivery_city"
    assert refused(reserve(2, by_post, total=2000_00)) == "total_mismatch"  # delivery left out
    cheap = UpsertProduct("A", "Tea A", 100_00, "tea", weight=600)
    state = fold(shop_with_delivery(), decide(shop_with_delivery(), cheap, NOW))
    small = Reserve("o2", (OrderLine("A", 1, 100_00),), 100_00, 600)
    (below,) = decide(state, small, NOW)
    assert isinstance(below, Rejected) and below.reason == "below_minimum"
