"""The links `make ui` prints open what they say in MLflow 3.17's UI (checked in Chromium)."""

import json
from urllib.parse import parse_qsl, urlsplit

from pipeline.tracking.comparison import GROUP_TAG
from pipeline.tracking.ui import comparison_urls


def _query(url: str) -> list[tuple[str, str]]:
    fragment = urlsplit(url).fragment  # the UI routes on the hash: #/path?query
    return parse_qsl(fragment.split("?", 1)[1])


def test_links_open_model_training_views_of_the_comparison():
    urls = comparison_urls("http://127.0.0.1:5000/", "7", "abc123", ["r1", "r2"])
    runs = dict(_query(urls["runs"]))
    assert urls["runs"].startswith("http://127.0.0.1:5000/#/experiments/7/runs?")
    assert runs["searchFilter"] == f"tags.`{GROUP_TAG}` = 'abc123'"
    assert runs["workflowType"] == "machine_learning"

    compare = _query(urls["compare"])
    assert urls["compare"].startswith("http://127.0.0.1:5000/#/compare-runs?")
    # the compare page reads runs and experiments first: with any other key first it showed
    # 'Error while parsing URL: "undefined" is not valid JSON'
    assert [k for k, _ in compare] == ["runs", "experiments", "workflowType"]
    assert json.loads(compare[0][1]) == ["r1", "r2"] and json.loads(compare[1][1]) == ["7"]
    assert compare[2][1] == "machine_learning"


def test_the_first_link_is_the_parent_run_page():
    urls = comparison_urls("http://127.0.0.1:5000", "7", "abc123", ["r1"], "p9")
    assert list(urls)[0] == "parent"
    assert urls["parent"] == ("http://127.0.0.1:5000/#/experiments/7/runs/p9"
                              "?workflowType=machine_learning")


def test_the_saved_view_link_opens_the_comparison_by_variant():
    urls = comparison_urls("http://127.0.0.1:5000", "7", "abc123", ["r1"], "p9abcdef012345")
    query = dict(_query(urls["by variant"]))
    assert query == {"viewStateShareKey": "comparison-p9abcdef0123", "compareRunsMode": "CHART",
                     "workflowType": "machine_learning"}
