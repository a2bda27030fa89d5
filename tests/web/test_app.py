"""The web app in a browser against the running system: the issue's "How it is checked" list
and the rest of what the page promises (headers, URL state, exports, expiry, API docs)."""

from __future__ import annotations

import csv
import io
import re
import struct
from pathlib import Path

import httpx
import psycopg
import pytest

from tests.conftest import System, bearer
from tests.web.conftest import App

LINEAGE = {"FG-DONER-X1", "MIX-BATCH-88", "RAW-BEEF-001", "RAW-SPICE-001"}
XSS = "<img src=x onerror=alert(1)>"


def test_page_and_assets_carry_strict_headers(web_system: System) -> None:
    with httpx.Client(base_url=web_system.base, timeout=10) as client:
        for path in ("/", "/api/docs", "/web/js/main.js", "/web/vendor/cytoscape/dist/cytoscape.esm.min.mjs"):
            r = client.get(path)
            assert r.status_code == 200, path
            csp = r.headers["content-security-policy"]
            script_src = re.search(r"script-src ([^;]*)", csp)
            assert script_src and "unsafe-inline" not in script_src.group(1) and "unsafe-eval" not in csp, csp
            assert "frame-ancestors 'none'" in csp
            assert r.headers["x-content-type-options"] == "nosniff"
        assert client.get("/web/js/main.js").headers["content-type"].startswith("text/javascript")
        page = client.get("/").text
        assert "<script>" not in page and 'type="module" src="/web/js/main.js"' in page
        # The API keeps its own answers: an unknown route is still a JSON 404.
        nope = client.get("/api/nope")
        assert nope.status_code == 404 and nope.json()["error"]["reason"] == "ROUTE_NOT_FOUND"
        assert client.get("/web/nope.js").status_code == 404


def test_sign_in_and_search_with_the_keyboard(app: App) -> None:
    page = app.open("/", user=None)
    assert page.locator("#sign-in").is_visible()
    app.sign_in("ana")
    assert page.locator("#who").text_content() == "ana (viewer)"
    box = page.locator("#search-input")
    box.fill("FG-DON")
    option = page.locator("#search-results li[role=option]", has_text="FG-DONER-X1")
    option.wait_for()
    assert page.locator("#search-results li").count() == 1
    box.press("ArrowDown")  # wraps around the one answer
    box.press("Enter")
    page.wait_for_url(re.compile(r"lot=FG-DONER-X1"))
    assert set(app.drawn()) == LINEAGE
    # By product, case-insensitive, filtered by kind.
    box.fill("doner spice")
    page.locator("#search-results li", has_text="RAW-SPICE-001").wait_for()
    page.locator("#search-kind").select_option("FG")
    page.locator("#search-results li", has_text="No lot found").wait_for()
    page.locator("#search-kind").select_option("")
    box.fill("no-such-lot")
    page.locator("#search-results li", has_text="No lot found").wait_for()


def test_explorer_shows_the_lineage_in_graph_and_table(app: App) -> None:
    page = app.open("/?lot=FG-DONER-X1&dir=upstream&depth=2")
    assert set(app.drawn()) == LINEAGE
    assert page.locator("#showing").text_content() == "showing 4 of 4 lots"
    edges = page.evaluate("() => flowviz.graph.cy.edges().map((e) => e.data('label'))")
    assert "20 kg · RUN-MIX-88" in edges
    # Upstream on the left: each parent sits left of its child.
    x = page.evaluate(
        "() => Object.fromEntries(flowviz.graph.cy.nodes().map((n) => [n.id(), n.position('x')]))"
    )
    assert x["RAW-SPICE-001"] < x["MIX-BATCH-88"] < x["FG-DONER-X1"]

    page.locator("#view-table").click()
    rows = page.locator("#table-wrap tbody tr")
    assert {rows.nth(i).get_attribute("data-lot") for i in range(rows.count())} == LINEAGE
    page.locator("#table-wrap th button", has_text="Lot").click()
    first = [rows.nth(i).get_attribute("data-lot") for i in range(rows.count())]
    assert first == sorted(LINEAGE)
    page.locator("#table-wrap th button", has_text="Lot").click()
    assert [rows.nth(i).get_attribute("data-lot") for i in range(rows.count())] == sorted(
        LINEAGE, reverse=True
    )
    app.shot("explorer-table")

    # Selecting a lot in the table selects it in the graph, lights its lineage, and goes in the URL.
    page.locator("#table-wrap button", has_text="RAW-BEEF-001").click()
    page.wait_for_url(re.compile(r"sel=RAW-BEEF-001"))
    assert "path" in app.node_classes("FG-DONER-X1") and "faded" in app.node_classes("RAW-SPICE-001")
    assert page.locator("#panel-lot h2").text_content() == "RAW-BEEF-001"

    # The link alone brings the same view back, in another tab (signed in there on its own).
    url = page.url
    other = app.page.context.new_page()
    colleague = App(other, app.base)
    other.goto(url)
    colleague.sign_in("ana")
    other.wait_for_selector("#graph[data-drawn]", state="attached")
    assert other.evaluate("() => flowviz.graph.cy.$(':selected').map((n) => n.id())") == ["RAW-BEEF-001"]
    assert other.locator("#direction").input_value() == "upstream"
    other.close()
    page.locator("#view-graph").click()
    app.shot("explorer")


def test_a_cut_answer_says_so(app: App) -> None:
    page = app.open("/?lot=FG-DONER-X1&dir=upstream&nodes=2")
    assert len(app.drawn("FG-DONER-X1")) == 2
    assert "cut at the API's limit" in page.locator("#banner").text_content()
    assert page.locator("#showing").text_content().endswith("(answer cut)")


def test_png_and_csv_exports(app: App) -> None:
    page = app.open("/?lot=FG-DONER-X1")
    app.drawn()
    with page.expect_download() as png:
        page.locator("#export-png").click()
    data = Path(png.value.path()).read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, _height = struct.unpack(">II", data[16:24])
    graph_width = page.evaluate("() => flowviz.graph.cy.elements().boundingBox().w")
    assert width >= 1.9 * graph_width  # the whole graph at 2x, edges included
    with page.expect_download() as table:
        page.locator("#export-csv").click()
    rows = list(csv.DictReader(io.StringIO(Path(table.value.path()).read_text(encoding="utf-8"))))
    assert {r["lot_code"] for r in rows} == LINEAGE


def test_hold_from_the_recall_workbench_holds_the_finished_good(app: App, web_system: System) -> None:
    page = app.open("/?lot=RAW-SPICE-001&tab=recall", user="quinn")
    affected = page.locator("#panel-recall .recall-table tbody tr")
    affected.first.wait_for()
    assert {affected.nth(i).get_attribute("data-lot") for i in range(affected.count())} == {
        "MIX-BATCH-88",
        "FG-DONER-X1",
    }
    fg = page.locator('#panel-recall .recall-table tr[data-lot="FG-DONER-X1"]')
    assert "20 kg" in fg.text_content()  # how much of the spice the finished good contains
    hold = page.locator("#panel-recall button[data-decision=hold]")
    hold.click()  # no reason yet: refused in the page
    assert page.locator("#panel-recall .actions .error").text_content() == "A reason is required."
    page.locator("#panel-recall textarea").fill("supplier recall: salmonella in spice lot")
    hold.click()
    fg.locator("text=on hold because of RAW-SPICE-001").wait_for()
    status = httpx.get(
        web_system.base + "/api/lots/FG-DONER-X1/qc-status", headers=bearer("ana"), timeout=10
    ).json()
    assert status["effective_status"] == "on_hold" and status["status"] == "pending"
    app.shot("recall-held")

    # The explorer shows the finished good held because of the spice, and the spice as the blocker.
    page.goto(web_system.base + "/?lot=FG-DONER-X1")
    app.drawn("FG-DONER-X1")
    assert "inherited" in app.node_classes("FG-DONER-X1")
    assert {"on_hold", "blocker"} <= set(app.node_classes("RAW-SPICE-001"))
    assert "inherited" in app.node_classes("MIX-BATCH-88")
    panel = page.locator("#panel-lot")
    panel.locator("ul.blocking li", has_text="RAW-SPICE-001").wait_for()
    assert "supplier recall: salmonella in spice lot" in panel.locator("ul.blocking").text_content()
    app.shot("explorer-held")


def test_drills_and_exports_from_the_workbench(app: App) -> None:
    page = app.open("/?lot=RAW-SPICE-001&tab=recall", user="quinn")
    panel = page.locator("#panel-recall")
    panel.locator("button", has_text="Run a drill from RAW-SPICE-001").click()
    panel.locator("text=Drill done in").wait_for()
    # The drill's accountability: the seed's 25 kg spice lot, 20 kg of it in the mix, 5 kg in stock.
    report = panel.locator(".accountability").first
    report.wait_for()
    assert "Accounted for within ±2%" in report.text_content()
    assert "Still in stock in the root lot5 kg" in report.text_content()
    drills = panel.locator("li", has_text="Drill RAW-SPICE-001")
    drills.first.wait_for()
    drills.first.locator("button", has_text="snapshot").click()
    snapshot = panel.locator("pre.snapshot").first
    snapshot.wait_for()
    assert "FG-DONER-X1" in snapshot.text_content()
    with page.expect_download() as fsma:
        panel.locator("button", has_text="FSMA 204 CSV").click()
    assert fsma.value.suggested_filename == "RAW-SPICE-001.csv"
    assert "FG-DONER-X1" in Path(fsma.value.path()).read_text(encoding="utf-8")
    with page.expect_download() as epcis:
        panel.locator("button", has_text="EPCIS JSON-LD").click()
    assert "TransformationEvent" in Path(epcis.value.path()).read_text(encoding="utf-8")


def test_record_a_run_through_the_form(app: App, web_system: System) -> None:
    page = app.open("/?lot=RAW-BEEF-001&tab=run", user="omar")
    form = page.locator("#panel-run form")
    form.locator("input[name=run_code]").fill("RUN-WEB-1")
    assert form.locator('input[name="inputs[0].lot_code"]').input_value() == "RAW-BEEF-001"
    form.locator('input[name="inputs[0].quantity"]').fill("lots")
    form.locator('input[name="outputs[0].lot_code"]').fill("MIX-WEB-1")
    form.locator('input[name="outputs[0].product"]').fill("Web test mix")
    form.locator('input[name="outputs[0].quantity"]').fill("10")
    form.locator("button[type=submit]").click()
    # The API's error appears beside the field it names.
    error = form.locator('.line[data-prefix="inputs[0]"] .field-error')
    error.wait_for()
    assert "inputs[0].quantity" in error.text_content()
    assert form.locator('input[name="inputs[0].quantity"]').get_attribute("aria-invalid") == "true"

    posts: list[str] = []
    page.on(
        "request",
        lambda r: (
            r.method == "POST"
            and "/api/production-runs" in r.url
            and posts.append(r.headers["idempotency-key"])
        ),
    )
    form.locator('input[name="inputs[0].quantity"]').fill("10")
    form.locator("button[type=submit]").dblclick()
    page.wait_for_url(re.compile(r"lot=MIX-WEB-1"))
    assert {"MIX-WEB-1", "RAW-BEEF-001"} <= set(app.drawn("MIX-WEB-1"))
    assert posts and len(set(posts)) == 1  # a double click is one submission (one key)
    balance = httpx.get(
        web_system.base + "/api/lots/RAW-BEEF-001/mass-balance", headers=bearer("ana"), timeout=10
    ).json()
    assert balance["consumed_by_children"] == 390.0  # 380 by the seed's mix + 10, once
    run = httpx.get(
        web_system.base + "/api/production-runs/RUN-WEB-1", headers=bearer("ana"), timeout=10
    ).json()["run"]
    assert run["recorded_by"] == "omar" and [o["lot_code"] for o in run["outputs"]] == ["MIX-WEB-1"]
    app.shot("run-recorded")


def test_a_lot_with_neighbours_not_shown_expands_on_click(app: App) -> None:
    """After the run above, RAW-BEEF-001 has a child the upstream trace of FG-DONER-X1 leaves out."""
    page = app.open("/?lot=FG-DONER-X1&dir=upstream")
    assert set(app.drawn("FG-DONER-X1")) == LINEAGE
    page.locator("#showing", has_text="showing 4 of 5 lots").wait_for()
    label = page.evaluate("() => flowviz.graph.cy.getElementById('RAW-BEEF-001').data('label')")
    assert label.startswith("RAW-BEEF-001  +1")
    page.evaluate("() => { flowviz.graph.cy.getElementById('RAW-BEEF-001').emit('tap'); }")
    page.wait_for_selector('#graph[data-drawn="5"]', state="attached")
    assert set(app.drawn()) == {*LINEAGE, "MIX-WEB-1"}
    page.locator("#showing", has_text="showing 5 of 5 lots").wait_for()
    assert "path" in app.node_classes("MIX-WEB-1")  # the selection's lineage includes what was added


def test_a_viewer_sees_the_actions_disabled_with_the_reason(app: App) -> None:
    page = app.open("/?lot=FG-DONER-X1", user="ana")
    hold = page.locator("#panel-lot button[data-decision=hold]")
    hold.wait_for()
    assert hold.is_disabled()
    assert "QC decisions need the qc or admin role" in page.locator("#panel-lot .why").text_content()
    page.locator("#tab-recall").click()
    assert page.locator("#panel-recall button[data-decision=hold]").is_disabled()
    page.locator("#tab-run").click()
    assert page.locator("#panel-run button[type=submit]").is_disabled()
    assert "operator or admin" in page.locator("#panel-run .why").text_content()
    app.shot("viewer")


def test_a_product_name_with_markup_renders_as_text(app: App, web_system: System) -> None:
    r = httpx.post(web_system.base + "/api/lots", headers=bearer("ada"), timeout=10,
                   json={"lot_code": "RAW-XSS-1", "kind": "RAW", "product": XSS, "quantity": 1, "uom": "kg"})  # fmt: skip
    assert r.status_code == 201, r.text
    page = app.open("/?lot=RAW-XSS-1")
    app.drawn()
    product = page.locator("#panel-lot dd").nth(1)
    product.wait_for()
    assert product.text_content() == XSS
    page.locator("#view-table").click()
    assert page.locator("#table-wrap td", has_text=XSS).count() == 1
    page.locator("#search-input").fill("RAW-XSS")
    page.locator("#search-results li", has_text=XSS).wait_for()
    assert page.locator("img[src=x]").count() == 0  # never parsed as HTML anywhere
    # (the fixture also fails the test if the page opened a dialog or logged an error)


def test_a_cycle_in_bad_data_is_shown_once(app: App, web_system: System) -> None:
    for code in ("MIX-CYC-A", "MIX-CYC-B"):
        r = httpx.post(web_system.base + "/api/lots", headers=bearer("ada"), timeout=10,
                       json={"lot_code": code, "kind": "MIX", "product": "loop", "quantity": 1, "uom": "kg"})  # fmt: skip
        assert r.status_code == 201, r.text
    with psycopg.connect(web_system.env["DATABASE_URL"], autocommit=True) as conn:
        conn.execute(
            "INSERT INTO lot_genealogy (parent_lot_id, child_lot_id, quantity, uom) "
            "SELECT a.id, b.id, 1, 'kg' FROM lots a, lots b WHERE (a.lot_code, b.lot_code) IN "
            "(('MIX-CYC-A', 'MIX-CYC-B'), ('MIX-CYC-B', 'MIX-CYC-A'))"
        )
    page = app.open("/?lot=MIX-CYC-A&depth=10")
    assert sorted(app.drawn()) == ["MIX-CYC-A", "MIX-CYC-B"]
    assert "cycle" in page.locator("#banner").text_content()


def test_a_large_trace_shows_a_summary_then_draws_all(app: App, web_system: System) -> None:
    """2,500 lots from one raw lot: a summary first, "draw all" on the canvas renderer."""
    n = 2500
    lots = "lot_code,kind,product,quantity,uom,produced_at\nRAW-BIG-0,RAW,Bulk salt,5000,kg,2026-01-01T00:00:00Z\n"
    lots += "".join(f"MIX-BIG-{i:04},MIX,Salted mix {i},2,kg,2026-01-02T00:00:00Z\n" for i in range(n))
    edges = "parent_lot_code,child_lot_code,quantity,uom,run_code\n"
    edges += "".join(f"RAW-BIG-0,MIX-BIG-{i:04},1,kg,RUN-BIG-{i:04}\n" for i in range(n))
    r = httpx.post(web_system.base + "/api/import", headers=bearer("ada"), timeout=60,
                   files={"lots": ("lots.csv", lots), "genealogy": ("genealogy.csv", edges)})  # fmt: skip
    assert r.status_code in (200, 201), r.text
    page = app.open("/?lot=RAW-BIG-0&dir=downstream")
    draw_all = page.locator("#draw-all")
    draw_all.wait_for()
    assert draw_all.text_content() == "Draw all 2,501 lots"
    assert page.locator("#summary").text_content().count("MIX: 2,500") == 1
    assert page.locator("#showing").text_content() == "showing 0 of 2,501 lots"
    draw_all.click()
    page.wait_for_selector('#graph[data-drawn="2501"]', state="attached")
    assert "all=1" in page.url and page.locator("#showing").text_content() == "showing 2,501 of 2,501 lots"
    # A click on a lot's box selects it, as in the small graphs.
    x, y = (
        page.evaluate("""() => { const g = flowviz.graph.canvas, i = g.index.get('MIX-BIG-0007'), r = g.canvas.getBoundingClientRect();
                           g.view = { scale: 0.5, tx: r.width / 2 - g.x[i] * 0.5, ty: r.height / 2 - g.y[i] * 0.5 }; g.schedule();
                           return [r.left + r.width / 2, r.top + r.height / 2]; }""")
    )
    page.mouse.click(x, y)
    page.wait_for_url(re.compile(r"sel=MIX-BIG-0007"))
    page.locator("#panel-lot h2", has_text="MIX-BIG-0007").wait_for()
    lit = page.evaluate("() => Array.from(flowviz.graph.canvas.lit).reduce((a, b) => a + b, 0)")
    assert lit == 2  # the lot and its one parent
    app.shot("explorer-2500")
    with page.expect_download() as png:
        page.locator("#export-png").click()
    assert Path(png.value.path()).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_an_expired_session_asks_to_sign_in_and_returns_to_the_view(app: App) -> None:
    page = app.open("/?lot=FG-DONER-X1&dir=upstream")
    app.drawn()
    # The server no longer accepts the token (as when it expires).
    page.evaluate("""() => { const k = 'flowviz.token.session'; const s = JSON.parse(sessionStorage.getItem(k));
                     s.token = 'expired'; sessionStorage.setItem(k, JSON.stringify(s)); }""")
    page.evaluate("() => { flowviz.graph.cy.getElementById('RAW-SPICE-001').emit('tap'); }")
    page.locator("#sign-in").wait_for()
    assert "expired" in page.locator("#sign-in-why").text_content()
    app.sign_in("ada")
    page.locator("#panel-lot h2", has_text="RAW-SPICE-001").wait_for()
    assert "sel=RAW-SPICE-001" in page.url and "dir=upstream" in page.url


@pytest.mark.parametrize("width,height", [(1280, 800), (768, 1024)])
def test_the_page_fits_the_window(app: App, width: int, height: int) -> None:
    app.page.set_viewport_size({"width": width, "height": height})
    page = app.open("/?lot=FG-DONER-X1")
    app.drawn()
    box = page.locator("#graph").bounding_box()
    side = page.locator(".side").bounding_box()
    assert box and side and box["width"] > 300 and box["height"] > 300
    assert page.evaluate("() => document.documentElement.scrollWidth") <= width  # no sideways scrolling
    if width < 900:
        assert side["y"] >= box["y"] + box["height"] - 1  # the panel goes below the graph
    else:
        assert side["x"] >= box["x"] + box["width"] - 1
    assert page.locator("#panel-lot button[data-decision=hold]").is_visible()
    app.shot(f"explorer-{width}")


def test_api_docs_try_it_out_with_the_apps_token(app: App) -> None:
    page = app.open("/?lot=FG-DONER-X1", user="ana")
    app.drawn()
    page.goto(app.base + "/api/docs")
    op = page.locator("#operations-lots-GetLot")
    op.wait_for()
    op.locator(".opblock-summary").click()
    op.locator("button.try-out__btn").click()
    op.locator("input[placeholder=lot_code]").fill("MIX-BATCH-88")
    op.locator("button.execute").click()
    status = op.locator(".live-responses-table tbody .response-col_status").first
    status.wait_for()
    assert status.text_content().strip() == "200"
    assert "Doner meat mix" in op.locator(".live-responses-table .microlight").first.text_content()


def test_the_layout_is_layered_and_survives_cycles(app: App) -> None:
    """The worker's layout on 10,000 lots with a cycle, in the page: parents left of children."""
    page = app.open("/", user=None)
    result = page.evaluate(
        """async () => {
          const { layout } = await import('/web/js/layout.js');
          const n = 10000, src = [], dst = [];
          let seed = 7; const rnd = () => (seed = (seed * 16807) % 2147483647) / 2147483647;
          for (let i = 1; i < n; i++) for (let k = 0; k < 1 + (i % 3); k++) { src.push(Math.floor(rnd() * i)); dst.push(i); }
          src.push(n - 1); dst.push(0);  // bad data: closes a cycle
          const r = layout(n, Int32Array.from(src), Int32Array.from(dst));
          let forward = 0;
          for (let e = 0; e < src.length; e++) if (r.x[src[e]] < r.x[dst[e]]) forward++;
          return { edges: src.length, forward, back: r.backEdges, finite: r.x.every(Number.isFinite) && r.y.every(Number.isFinite) };
        }"""
    )
    assert result["finite"] and result["back"] == 1 and result["forward"] == result["edges"] - 1


def test_a_release_from_the_lot_panel_is_signed_with_the_password(app: App, web_system: System) -> None:
    admin = bearer("ada")
    r = httpx.post(web_system.base + "/api/lots", headers=admin, timeout=10,
                   json={"lot_code": "RAW-SIGN-1", "kind": "RAW", "product": "Salt", "quantity": 1, "uom": "kg"})  # fmt: skip
    assert r.status_code == 201, r.text
    r = httpx.post(web_system.base + "/api/lots/RAW-SIGN-1/qc-decisions", headers=admin, timeout=10,
                   json={"decision": "hold", "reason": "swab"})  # fmt: skip
    assert r.status_code == 201, r.text
    page = app.open("/?lot=RAW-SIGN-1", user="quinn")
    release = page.locator("#panel-lot button[data-decision=release]")
    release.wait_for()
    page.locator("#panel-lot textarea").fill("retest negative")
    release.click()  # no password: refused in the page, nothing sent
    assert (
        page.locator("#panel-lot .actions .error").text_content()
        == "Re-enter your password to sign this release."
    )
    page.locator("#panel-lot input[type=password]").fill("qc-pass-2026")
    release.click()
    signed = page.locator("#panel-lot td.signature", has_text="released for use")
    signed.wait_for()
    assert signed.text_content() == "signed by Quinn: released for use"
    assert "electronic signature of quinn" in (signed.get_attribute("title") or "")
    assert page.locator("#panel-lot input[type=password]").input_value() == ""  # not kept
    app.shot("release-signed")


def test_the_health_badge_names_what_is_down(app: App, web_system: System) -> None:
    """Last in the module: it stops the system's qc service."""
    page = app.open("/")
    page.locator("#health", has_text="all systems up").wait_for()
    qc = web_system.procs["qc-web"]
    qc.terminate()
    qc.wait(30)
    page.locator("#health", has_text="down: qc").wait_for(timeout=30_000)
    assert "down" in (page.locator("#health").get_attribute("class") or "")
