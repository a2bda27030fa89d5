"""Receipts, shipments and the recall's notification list in the browser (issue 13): recorded
through the API on this module's own database, then read off the lot panel, the graph and the
recall workbench, with the notification list's CSV downloaded through the page.

The genealogy, with hand-checked figures: RAW-A (100 kg) and RAW-B (100 kg) are received from
one supplier; a run takes 30 kg of each into FG (60 kg, so half of it is RAW-A). RAW-A ships
10 kg and FG 24 kg to one customer's DC. A recall of RAW-A names that customer with 2 shipments,
34 kg, of which 10 + 24 x 0.5 = 22 kg is RAW-A; still in the plant: RAW-A 100 - 30 - 10 = 60 kg
and FG 60 - 24 = 36 kg (18 kg of it RAW-A)."""

from __future__ import annotations

import csv
import io
import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.conftest import System, bearer
from tests.test_production import run
from tests.test_shipping import Parties, make_parties, receive, ship
from tests.web.conftest import App


def tall_shot(app: App, name: str) -> None:
    """The side panel scrolls on its own: a tall window lets the screenshot show all of it."""
    size = app.page.viewport_size
    app.page.set_viewport_size({"width": 1280, "height": 2000})
    app.shot(name)
    if size:
        app.page.set_viewport_size(size)


@dataclass(frozen=True)
class Trade:
    parties: Parties
    raw_a: str
    raw_b: str
    fg: str
    ship_raw: dict[str, object]
    ship_fg: dict[str, object]
    many: str
    idle: str
    twin: str


@pytest.fixture(scope="module")
def trade(web_system: System) -> Iterator[Trade]:
    t = uuid.uuid4().hex[:6].upper()
    raw_a, raw_b, fg, many, idle = f"RAW-WA-{t}", f"RAW-WB-{t}", f"FG-W-{t}", f"RAW-WM-{t}", f"RAW-WI-{t}"
    with httpx.Client(base_url=web_system.base, timeout=10, headers=bearer("ada")) as http:
        p = make_parties(http)
        for code in (raw_a, raw_b, many, idle):
            r = receive(http, p, code, 100)
            assert r.status_code == 201, r.text
        # A second delivery under the same supplier lot code as RAW-A.
        twin = f"RAW-WT-{t}"
        r = receive(http, p, twin, 40, supplier_lot_code=f"S/{raw_a}", received_at="2026-12-01T07:00:00Z")
        assert r.status_code == 201, r.text
        r = run(http, f"RUN-W-{t}", [(raw_a, 30, "kg"), (raw_b, 30, "kg")], [(fg, "FG", 60)])
        assert r.status_code == 201, r.text
        shipped = []
        for code, qty in ((raw_a, 10), (fg, 24)):
            r = ship(http, p, code, qty)
            assert r.status_code == 201, r.text
            shipped.append(r.json()["shipment"])
        for i in range(25):  # more than the panel shows at first
            r = ship(http, p, many, 1 + i / 100, shipped_at=f"2026-12-02T{i % 24:02d}:00:00Z")
            assert r.status_code == 201, r.text
    yield Trade(p, raw_a, raw_b, fg, shipped[0], shipped[1], many, idle, twin)


def test_the_lot_panel_shows_the_receipt_and_the_shipments(app: App, trade: Trade) -> None:
    p = trade.parties
    page = app.open(f"/?lot={trade.raw_a}")
    app.drawn(trade.raw_a)
    panel = page.locator("#panel-lot")
    receipt = panel.locator(".receipt")
    receipt.wait_for()
    facts = dict(
        zip(receipt.locator("dt").all_text_contents(), receipt.locator("dd").all_text_contents(), strict=True)
    )
    assert facts["supplier"] == f"{p.supplier} GmbH ({p.supplier})"
    assert facts["supplier's lot"] == f"S/{trade.raw_a}"
    assert p.supplier_site in facts["ship-from"] and p.plant in facts["received at"]
    assert facts["date"] == "2026-11-30 08:15 UTC"
    assert facts["quantity"] == "100 kg"
    assert facts["document"] == f"BOL BOL-{trade.raw_a}"
    assert facts["expiry"] == "2027-11-30"
    # Consumed 30 kg by the run and 10 kg shipped: the mass balance says so.
    assert "10 kg in 1 shipment" in panel.text_content()
    row = panel.locator(f'table.shipments tr[data-shipment="{trade.ship_raw["id"]}"]')
    assert row.locator("td.when").text_content() == "2026-12-01 14:00 UTC"
    assert row.locator(".to-customer").text_content() == f"{p.customer} GmbH ({p.customer})"
    assert row.locator("td.num").text_content() == "10 kg"
    assert row.locator(".document").text_content() == f"ASN {trade.ship_raw['document_number']}"
    # The ship-to's and the carrier's names come from their records (looked up once a session).
    row.locator(".ship-to-place", has_text=f"{p.customer_dc}, DE").wait_for()
    row.locator(f'.carrier [title="{p.carrier}"]', has_text=f"{p.carrier} GmbH").wait_for()
    assert panel.locator("table.shipments tbody tr").count() == 1
    assert panel.locator(".shipped-total").text_content() == "1 shipment to 1 customer: 10 kg."
    tall_shot(app, "lot-panel-receipt-shipments")


def test_many_shipments_are_shown_a_step_at_a_time(app: App, trade: Trade) -> None:
    page = app.open(f"/?lot={trade.many}")
    panel = page.locator("#panel-lot")
    rows = panel.locator("table.shipments tbody tr")
    rows.first.wait_for()
    assert rows.count() == 20
    note = panel.locator("p.steps")
    assert "Showing 20 of 25 shipments." in note.text_content()
    note.locator("button", has_text="Show 5 more").click()
    assert rows.count() == 25
    assert note.is_hidden()
    assert panel.locator(".shipped-total").text_content() == "25 shipments to 1 customer: 28 kg."


def test_the_graph_draws_the_supplier_and_the_customer_with_labelled_edges(app: App, trade: Trade) -> None:
    p = trade.parties
    page = app.open(f"/?lot={trade.raw_a}&dir=both&depth=3")
    ids = set(app.drawn(trade.raw_a))
    supplier, customer = f"from:{p.supplier}/{p.supplier_site}", f"to:{p.customer}/{p.customer_dc}"
    assert {trade.raw_a, trade.fg, supplier, customer} <= ids
    assert "partner" in app.node_classes(supplier) and "customer" in app.node_classes(customer)
    labels = page.evaluate(
        "() => Object.fromEntries(flowviz.graph.cy.edges('.partner').map((e) => [e.source().id() + '>' + e.target().id(), e.data('label')]))"
    )
    assert labels == {
        f"{supplier}>{trade.raw_a}": f"received 100 kg · BOL BOL-{trade.raw_a}",
        f"{trade.raw_a}>{customer}": f"shipped 10 kg · ASN {trade.ship_raw['document_number']}",
        f"{trade.fg}>{customer}": f"shipped 24 kg · ASN {trade.ship_fg['document_number']}",
    }
    node_label = page.evaluate("(id) => flowviz.graph.cy.getElementById(id).data('label')", customer)
    assert node_label == f"to {p.customer} GmbH\n{p.customer_dc}"
    # Lots are counted as lots (RAW-B, the FG's other input, is not shown yet); the sites apart.
    page.locator("#showing", has_text="showing 2 of 3 lots, with 2 supplier and customer sites").wait_for()
    # A click on the customer's box shows what went there; the graph stays where it is.
    page.evaluate("(id) => { flowviz.graph.cy.getElementById(id).emit('tap'); }", customer)
    panel = page.locator("#panel-lot")
    panel.locator("h3", has_text="Shipped here").wait_for()
    rows = panel.locator("table.shipments tbody tr")
    assert sorted(rows.nth(i).get_attribute("data-lot") for i in range(rows.count())) == sorted(
        [trade.raw_a, trade.fg]
    )
    assert rows.locator("td:nth-child(2)").all_text_contents() == [trade.raw_a, trade.fg]  # the lot column
    page.evaluate("(id) => { flowviz.graph.cy.getElementById(id).emit('dbltap'); }", customer)
    assert (
        f"lot={trade.raw_a}&" in page.url and page.locator("#graph").get_attribute("data-root") == trade.raw_a
    )
    tall_shot(app, "graph-partners")
    # The selection is in the URL like a lot's: the link opens the same site's panel.
    page.reload()
    page.locator("#panel-lot h3", has_text="Shipped here").wait_for()
    assert page.evaluate("() => flowviz.graph.cy.$(':selected').map((n) => n.id())") == [customer]


def test_the_recall_workbench_names_whom_to_notify_and_downloads_the_csv(app: App, trade: Trade) -> None:
    p = trade.parties
    page = app.open(f"/?lot={trade.raw_a}&tab=recall", user="quinn")
    panel = page.locator("#panel-recall")
    customer = panel.locator(f'details.customer[data-customer="{p.customer}"]')
    customer.wait_for()
    assert panel.locator("details.customer").count() == 1
    assert customer.get_attribute("open") is not None
    summary = customer.locator("summary").text_content()
    assert summary == f"{p.customer} GmbH ({p.customer}): 2 shipments, 34 kg, 22 kg of {trade.raw_a}"
    assert "Contact: Recall desk, recall@x.example" in customer.text_content()
    site = customer.locator(f'.ship-to[data-location="{p.customer_dc}"]')
    assert f"34 kg shipped here, 22 kg of {trade.raw_a}." in site.text_content()
    rows = {}
    for i in range(site.locator("tbody tr").count()):
        tr = site.locator("tbody tr").nth(i)
        cells = [
            tr.locator(c).text_content()
            for c in ("td.when", "button", ".document", "td.quantity", "td.root-qty")
        ]
        rows[tr.get_attribute("data-lot")] = cells
    assert set(rows) == {trade.raw_a, trade.fg}
    assert rows[trade.fg] == [
        "2026-12-01 14:00 UTC", trade.fg, f"ASN {trade.ship_fg['document_number']}", "24 kg", "12 kg",
    ]  # fmt: skip
    assert rows[trade.raw_a][3:] == ["10 kg", "10 kg"]
    assert panel.locator(".notify-summary").text_content() == (
        f"2 shipments of affected lots to 1 customer: 34 kg shipped, 22 kg of it {trade.raw_a}."
    )
    plant = panel.locator("table.in-plant")
    in_plant = {
        plant.locator("tbody tr").nth(i).get_attribute("data-lot"): plant.locator("tbody tr").nth(i).locator("td").all_text_contents()
        for i in range(plant.locator("tbody tr").count())
    }  # fmt: skip
    assert in_plant[trade.raw_a][2:] == ["60 kg", "60 kg"] and p.plant in in_plant[trade.raw_a][1]
    assert in_plant[trade.fg][2:] == ["36 kg", "18 kg"]
    assert trade.raw_b not in in_plant  # not made from RAW-A: not affected
    assert panel.locator(".plant-summary").text_content() == f"2 lots: 96 kg, 78 kg of it {trade.raw_a}."
    tall_shot(app, "recall-notifications")

    with page.expect_download() as download:
        panel.locator("button", has_text="Download CSV").click()
    assert download.value.suggested_filename == f"notifications-{trade.raw_a}.csv"
    lines = list(csv.DictReader(io.StringIO(Path(download.value.path()).read_text(encoding="utf-8"))))
    shipments = {r["lot_code"]: r for r in lines if r["relation"] == "shipment"}
    assert set(shipments) == {trade.raw_a, trade.fg}
    fg = shipments[trade.fg]
    assert (fg["customer_code"], fg["location_code"], fg["document_number"]) == (
        p.customer, p.customer_dc, trade.ship_fg["document_number"],
    )  # fmt: skip
    assert (float(fg["quantity"]), float(fg["root_quantity"])) == (24, 12)
    assert sum(float(r["quantity"]) for r in shipments.values()) == 34
    assert sum(float(r["root_quantity"]) for r in shipments.values()) == 22
    stock = {r["lot_code"]: float(r["quantity"]) for r in lines if r["relation"] == "in_plant"}
    assert stock == {trade.raw_a: 60, trade.fg: 36}


def test_a_lot_shipped_nowhere_says_so(app: App, trade: Trade) -> None:
    page = app.open(f"/?lot={trade.idle}&tab=recall")
    panel = page.locator("#panel-recall")
    panel.locator(".notify-summary").wait_for()
    assert panel.locator(".notify-summary").text_content() == "No affected lot has been shipped."
    assert panel.locator("details.customer").count() == 0
    in_plant = panel.locator("table.in-plant tbody tr")
    assert [in_plant.nth(i).get_attribute("data-lot") for i in range(in_plant.count())] == [trade.idle]
    assert in_plant.first.locator("td").all_text_contents()[2:] == ["100 kg", "100 kg"]
    page.locator("#tab-lot").click()
    page.locator("#panel-lot .receipt").wait_for()
    assert page.locator("#panel-lot").locator("text=Not shipped.").is_visible()


def test_the_canvas_graph_draws_partner_sites_too(app: App, web_system: System, trade: Trade) -> None:
    """70 lots from one received lot (past the canvas renderer's threshold), 3 of them shipped."""
    p = trade.parties
    t = uuid.uuid4().hex[:6].upper()
    raw, n = f"RAW-WC-{t}", 70
    kids = [f"MIX-WC-{t}-{i:02}" for i in range(n)]
    with httpx.Client(base_url=web_system.base, timeout=60, headers=bearer("ada")) as http:
        assert receive(http, p, raw, 500).status_code == 201
        lots = "lot_code,kind,product,quantity,uom,produced_at\n"
        lots += "".join(f"{c},MIX,Mix {i},2,kg,2026-12-01T00:00:00Z\n" for i, c in enumerate(kids))
        edges = "parent_lot_code,child_lot_code,quantity,uom,run_code\n"
        edges += "".join(f"{raw},{c},2,kg,RUN-WC-{t}-{i:02}\n" for i, c in enumerate(kids))
        r = http.post(
            "/api/import", files={"lots": ("lots.csv", lots), "genealogy": ("genealogy.csv", edges)}
        )
        assert r.status_code in (200, 201), r.text
        for c in kids[:3]:
            assert ship(http, p, c, 1.5).status_code == 201
    page = app.open(f"/?lot={raw}&dir=downstream")
    page.wait_for_selector(f'#graph[data-drawn="{n + 1}"][data-partners="2"]', state="attached")
    customer = f"to:{p.customer}/{p.customer_dc}"
    titles = page.evaluate(
        "() => flowviz.graph.canvas.nodes.filter((x) => x.partner).map((x) => x.title).sort()"
    )
    assert titles == [f"from {p.supplier} GmbH", f"to {p.customer} GmbH"]
    x, y = page.evaluate(
        """(id) => { const g = flowviz.graph.canvas, i = g.index.get(id), r = g.canvas.getBoundingClientRect();
                     g.view = { scale: 0.5, tx: r.width / 2 - g.x[i] * 0.5, ty: r.height / 2 - g.y[i] * 0.5 }; g.schedule();
                     return [r.left + r.width / 2, r.top + r.height / 2]; }""",
        customer,
    )
    page.mouse.click(x, y)
    panel = page.locator("#panel-lot")
    panel.locator("h3", has_text="Shipped here").wait_for()
    rows = panel.locator("table.shipments tbody tr")
    assert sorted(rows.nth(i).get_attribute("data-lot") for i in range(rows.count())) == kids[:3]
    # The customer's site is lit with the lots shipped there and their parent, nothing else.
    lit = page.evaluate("() => Array.from(flowviz.graph.canvas.lit).reduce((a, b) => a + b, 0)")
    assert lit == 1 + 3 + 1 + 1  # the site, the 3 lots, the raw lot and its supplier's site
    tall_shot(app, "canvas-partners")


def test_a_supplier_calls_about_their_lot_code(app: App, trade: Trade) -> None:
    p = trade.parties
    page = app.open("/")
    form = page.locator("#supplier-trace")
    form.locator("input[name=supplier_code]").fill(p.supplier)
    form.locator("input[name=supplier_lot_code]").fill(f"S/{trade.raw_a}")
    form.locator("button[type=submit]").click()
    result = page.locator("#supplier-trace-result")
    result.locator(".supplier-summary").wait_for()
    assert result.locator(".supplier-summary").text_content() == (
        f"2 lots received under S/{trade.raw_a} from {p.supplier} GmbH:"
    )
    lots = result.locator("li")
    assert [lots.nth(i).get_attribute("data-lot") for i in range(lots.count())] == [trade.raw_a, trade.twin]
    assert lots.nth(0).locator(".reach").text_content() == (
        "It reached 1 lot; 2 shipments to 1 customer, 22 kg of it shipped, 78 kg still in the plant."
    )
    assert lots.nth(1).locator(".reach").text_content() == (
        "It reached 0 lots; 0 shipments to 0 customers, 0 kg of it shipped, 40 kg still in the plant."
    )
    assert f"40 kg, received 2026-12-01 07:00 UTC on BOL BOL-{trade.twin}." in lots.nth(1).text_content()
    app.shot("supplier-trace")
    lots.nth(0).locator("button", has_text="Recall").click()
    page.wait_for_url(re.compile(f"lot={trade.raw_a}.*tab=recall"))
    page.locator(f'#panel-recall details.customer[data-customer="{p.customer}"]').wait_for()
    # From the lot panel of a received lot, the same question in one click.
    page.locator("#tab-lot").click()
    panel = page.locator("#panel-lot")
    panel.locator("button", has_text=f"Every lot received under S/{trade.raw_a}").click()
    traced = panel.locator(".supplier-traced li")
    traced.nth(1).wait_for()
    assert [traced.nth(i).get_attribute("data-lot") for i in range(traced.count())] == [
        trade.raw_a,
        trade.twin,
    ]
    # A lot code the supplier never sent: said so, nothing else.
    page.goto(app.base + "/")
    form.locator("input[name=supplier_code]").fill(p.supplier)
    form.locator("input[name=supplier_lot_code]").fill("NO-SUCH-LOT")
    form.locator("button[type=submit]").click()
    result.locator("text=Nothing was received under NO-SUCH-LOT").wait_for()


def test_partner_names_with_markup_render_as_text(app: App, web_system: System, trade: Trade) -> None:
    p = trade.parties
    t = uuid.uuid4().hex[:6].upper()
    xss = "<img src=x onerror=alert(1)>"
    raw, customer, dc = f"RAW-WX-{t}", f"CUS-X-{t}", f"CUS-X-DC-{t}"
    with httpx.Client(base_url=web_system.base, timeout=10, headers=bearer("ada")) as http:
        r = http.post(
            "/api/partners", json={"code": customer, "name": xss, "roles": ["customer"], "contact_name": xss}
        )
        assert r.status_code == 201, r.text
        r = http.post("/api/locations", json={"code": dc, "name": xss, "partner_code": customer, "city": xss})
        assert r.status_code == 201, r.text
        assert receive(http, p, raw, 10).status_code == 201
        r = ship(http, p, raw, 2, customer_code=customer, ship_to_location_code=dc, document_number=xss)
        assert r.status_code == 201, r.text
    page = app.open(f"/?lot={raw}&tab=recall")
    panel = page.locator("#panel-recall")
    summary = panel.locator(f'details.customer[data-customer="{customer}"] summary')
    summary.wait_for()
    assert summary.text_content().startswith(f"{xss} ({customer}): 1 shipment, 2 kg")
    page.locator("#tab-lot").click()
    lot_panel = page.locator("#panel-lot")
    lot_panel.locator(".ship-to-place", has_text=f"{xss} ({dc}), {xss}").wait_for()
    assert lot_panel.locator(".document").text_content() == f"ASN {xss}"
    assert page.locator("img").count() == 0  # nothing was parsed as HTML (and app's fixture saw no alert)


@pytest.mark.parametrize("width,height", [(1280, 800), (768, 1024)])
def test_the_new_panels_fit_the_window(app: App, trade: Trade, width: int, height: int) -> None:
    """No sideways scrolling of the page: the wide tables scroll inside their panel."""
    app.page.set_viewport_size({"width": width, "height": height})
    for tab, ready in (("recall", "#panel-recall details.customer"), ("lot", "#panel-lot table.shipments")):
        page = app.open(f"/?lot={trade.raw_a}&tab={tab}", user="ada" if tab == "recall" else None)
        page.locator(ready).first.wait_for()
        assert page.evaluate("() => document.documentElement.scrollWidth") <= width, tab
        side = page.locator(".side").bounding_box()
        assert side and side["x"] + side["width"] <= width + 1, tab
