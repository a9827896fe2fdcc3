"""The dashboard in headless Chromium against a real local cluster: after a
node is killed (SIGKILL), the page rendered by the browser's own JavaScript
shows it as failed. Needs Debian's ``chromium`` (``apt-get install -y chromium``)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from synod.node.local import LocalNodeCluster
from tests.node.cluster_helpers import leaders, status, wait_for

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install -y chromium)"),
]


def render(url: str, tmp_path: Path) -> str:
    """The DOM after the page's scripts ran for 4 s of virtual time."""
    assert CHROMIUM is not None
    result = subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", f"--user-data-dir={tmp_path / 'profile'}",
         "--virtual-time-budget=4000", "--dump-dom", url],
        capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


def member_states(dom: str) -> dict[str, str]:
    rows = re.findall(r'<tr data-node="([^"]+)"><td>[^<]*</td><td class="([a-z]+)">', dom)
    return dict(rows)


def test_a_killed_node_shows_as_failed_in_the_browser(tmp_path: Path) -> None:
    with LocalNodeCluster(tmp_path / "cluster", 3, shards=1) as cluster:
        wait_for("a leader in every group", lambda: leaders(cluster, "n1"))
        url = f"http://{cluster.http('n1')}/"
        before = wait_for("every member alive on the page", lambda: (
            page if member_states(page := render(url, tmp_path)) == {"n1": "alive", "n2": "alive", "n3": "alive"}
            else None))
        assert '<td class="leader">' in before      # groups drawn from /status by the page's script

        cluster.kill("n3")
        wait_for("n3 dead at n1", lambda: {
            m["node"]: m["status"] for m in status(cluster, "n1")["members"]}["n3"] == "dead", timeout_s=60)
        after = render(url, tmp_path)
        assert member_states(after)["n3"] == "dead"
        assert "(unreachable)" in after           # its dashboard, in the members table
        assert "n3 unreachable" in after          # its replica, in the groups table
        assert member_states(after)["n1"] == "alive"


STATES_JS = ("JSON.stringify(Object.fromEntries([...document.querySelectorAll('#members tbody tr')]"
             ".map(r => [r.dataset.node, r.children[1].textContent])))")


def test_the_open_page_turns_a_killed_node_dead_without_reloading(tmp_path: Path) -> None:
    from tests.web.cdp import Browser

    assert CHROMIUM is not None
    with LocalNodeCluster(tmp_path / "cluster", 3, shards=1) as cluster:
        wait_for("a leader in every group", lambda: leaders(cluster, "n1"))
        url = f"http://{cluster.http('n1')}/"
        with Browser(CHROMIUM, url, tmp_path / "profile") as page:
            wait_for("all alive on the page", lambda: json.loads(page.evaluate(STATES_JS) or "{}") == {
                "n1": "alive", "n2": "alive", "n3": "alive"})
            page.evaluate("window.loadedOnce = 'yes'")      # gone if the page reloads
            cluster.kill("n3")
            wait_for("n3 dead on the open page",
                     lambda: json.loads(page.evaluate(STATES_JS) or "{}").get("n3") == "dead", timeout_s=60)
            assert page.evaluate("window.loadedOnce") == "yes"
            assert "n3 unreachable" in page.evaluate("document.querySelector('#groups').textContent")
