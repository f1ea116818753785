"""rlm view's page in a real browser (headless Chromium from the
distribution, driven through the DevTools protocol): from a depth-2 run with
a child, failed and retried sub-calls and model text holding HTML and script,
and from the demo's 10M-token trace (4,935 sub-calls). The tree, the code,
the outputs and the answer are there; expanding a batch and selecting a child
work; the model's HTML is shown as text and never runs; no request leaves the
page; a trace cut short gives a partial view that says so. Screenshots are
kept under the build tree (artifacts/) for CI. Without Chromium the test says
why and is skipped (exit 77), never passed."""
import json
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(__file__))
from harness import BUILD, RLM, RlmTestCase, main  # noqa: E402
import browser  # noqa: E402
import rich_run  # noqa: E402

ARTIFACTS = os.path.join(BUILD, "artifacts")
ANSWER = "12 parts, the child said 42 " + rich_run.HOSTILE

CHECK_RICH = r"""
const q = (s) => Array.from(document.querySelectorAll(s));
const out = {};
out.tree = q(".tree .node").map((e) => e.dataset.node);
out.answer = document.getElementById("answer").textContent;
out.how = document.getElementById("how").textContent;
out.code = q("pre.code").map((e) => e.textContent);
out.repl_spans = q("pre.code span.repl").map((e) => e.textContent);
out.outputs = q("pre.output").map((e) => e.textContent);
out.rows_before = q("table.subcalls tr[data-ev]").length;
q("details.batch-details summary")[0].click();
await new Promise((r) => setTimeout(r, 20));
out.rows = q("table.subcalls tr[data-ev]").length;
out.failed_rows = q("table.subcalls tr.failed").length;
out.title = document.title;
out.images = q("img").length;
out.page_scripts = q("script").length;
out.hostile_text = document.body.textContent.includes('<script>document.title="pwned"</script>');
q('.tree .node[data-node="0.1"]')[0].click();
out.child_heading = document.querySelector("#detail h2").textContent;
out.child_code = q("pre.code").map((e) => e.textContent);
const s = document.getElementById("search");
s.value = "part 7 done"; s.dispatchEvent(new Event("input"));
await new Promise((r) => setTimeout(r, 400));
out.search = document.getElementById("search-count").textContent;
q(".hit")[0].click();
await new Promise((r) => setTimeout(r, 50));
out.revealed = q("table.subcalls tr.flash").map((e) => e.textContent);
document.getElementById("show-timeline").click();
out.timeline_bars = q("#timeline rect").length;
return out;
"""

CHECK_DEMO = r"""
const q = (s) => Array.from(document.querySelectorAll(s));
const out = {answer: document.getElementById("answer").textContent, batches: q("details.batch-details").length};
q("details.batch-details summary")[0].click();
await new Promise((r) => setTimeout(r, 20));
out.rows = q("table.subcalls tr[data-ev]").length;
q("button.more").filter((b) => b.textContent.startsWith("show 100 more"))[0].click();
out.rows_more = q("table.subcalls tr[data-ev]").length;
out.totals = document.getElementById("totals").textContent;
return out;
"""

CHECK_CUT = r"""
return {notes: document.getElementById("notes").textContent, tree: Array.from(document.querySelectorAll(".tree .node")).map((e) => e.dataset.node),
        detail: document.getElementById("detail").textContent};
"""


class ViewInBrowser(RlmTestCase):
    def page(self, trace, name):
        html = os.path.join(self.tmp, name + ".html")
        p = subprocess.run([RLM, "view", trace, "-o", html], capture_output=True, text=True, timeout=120)
        self.assertEqual(p.returncode, 0, p.stderr)
        return html

    def load(self, html, check, shot):
        page = browser.Page()
        try:
            ready = page.open_viewer(html)
            self.assertIsNotNone(ready, "the viewer never became ready")
            result = page.evaluate("(async () => {" + check + "})()")
            page.screenshot(os.path.join(ARTIFACTS, shot))
            self.assertEqual(page.outside_requests(), [])
            self.assertEqual(page.errors, [])
            return ready, result
        finally:
            page.close()

    def rich_trace(self):
        return rich_run.trace(self)

    def test_rich_run(self):
        ready, r = self.load(self.page(self.rich_trace(), "rich"), CHECK_RICH, "view-rich.png")
        self.assertEqual(r["tree"], ["0", "0.1"])
        self.assertEqual(r["answer"], ANSWER)
        self.assertIn("FINAL in text", r["how"])
        self.assertTrue(any("llm_query_batched" in c for c in r["code"]))
        # The REPL's names (from the policy table at build time) are marked, a numbered one too.
        for name in ("llm_query_batched", "rlm_query", "context_0", "print"):
            self.assertIn(name, r["repl_spans"])
        self.assertNotIn("parts", r["repl_spans"])
        self.assertTrue(any("ROOT-GOT:child says 42" in o for o in r["outputs"]))
        self.assertTrue(any("ZeroDivisionError" in o for o in r["outputs"]))
        # Collapsed until opened: then every sub-call of the batch, the failed one marked.
        self.assertEqual(r["rows_before"], 0)
        self.assertEqual(r["rows"], 12)
        self.assertEqual(r["failed_rows"], 1)
        # The model's HTML is text on the page; its script never ran, its image never loaded.
        self.assertTrue(r["hostile_text"])
        self.assertEqual(r["title"], "rlm trace")
        self.assertEqual(r["images"], 0)
        self.assertEqual(r["page_scripts"], 2)
        self.assertEqual(r["child_heading"], "Child RLM 0.1")
        self.assertIn('FINAL("child says 42")', r["child_code"])
        self.assertIn("match", r["search"])
        self.assertTrue(r["revealed"] and "part 7 done" in r["revealed"][0], r)
        self.assertGreater(r["timeline_bars"], 3)

    def test_demo_trace(self):
        trace = os.path.join(self.tmp, "demo.jsonl")
        _, env, _ = self.rlm_command([], None)
        p = subprocess.run([RLM, "demo", "--trace", trace], capture_output=True, text=True, env=env,
                           timeout=600)
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
        ready, r = self.load(self.page(trace, "demo"), CHECK_DEMO, "view-demo.png")
        print("demo page ready after %.0f ms" % ready, file=sys.stderr)
        self.assertEqual(r["answer"], "73918")
        self.assertEqual(r["batches"], 8)
        self.assertEqual((r["rows"], r["rows_more"]), (100, 200))
        self.assertIn("4,935 sub-calls", r["totals"])

    def test_cut_trace_gives_a_partial_view(self):
        with open(self.rich_trace()) as f:
            lines = f.readlines()
        cut = self.write("cut.jsonl", "".join(lines[:len(lines) // 2]) + lines[len(lines) // 2][:30])
        _, r = self.load(self.page(cut, "cut"), CHECK_CUT, "view-cut.png")
        self.assertIn("cut short", r["notes"])
        self.assertIn("no run_end", r["notes"])
        self.assertIn("0", r["tree"])
        self.assertIn("Turn 1", r["detail"])


if __name__ == "__main__":
    why = browser.chromium_or_reason()
    if why:
        print("skipped: " + why, file=sys.stderr)
        sys.exit(77)
    main()
