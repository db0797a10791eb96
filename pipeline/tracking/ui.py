"""Where MLflow's UI shows the newest comparison: ``make ui`` runs

    python -m pipeline.tracking.ui --ui http://127.0.0.1:5000

which prints its experiment's runs table filtered on it (the parent is the only top-level row;
its ``+`` expands it into the cells, a state the UI keeps per browser and no link can set), and
MLflow's compare page of its cell runs.
"""

from __future__ import annotations

import argparse
import json
import os
from urllib.parse import quote

from .comparison import GROUP_TAG, PARENT_TAG, ROLE_TAG, view_key
from .uri import client


def comparison_urls(ui: str, experiment_id: str, group: str, variant_runs: list[str],
                    parent_run: str = "") -> dict:
    """Where the UI at ``ui`` shows a comparison: its parent run's page (the answer in its
    description, the study's metrics, the report), its saved view (the cells grouped by variant,
    a bar per variant of the mean test top-1 over its cells: :func:`.comparison_view`), its runs
    in the experiment's table (the parent
    listed, its variants one click away), and the compare page of its variant runs (params,
    metrics and plots side by side). ``workflowType``: MLflow 3.17 opens an experiment as a GenAI
    app unless its sidebar switch, remembered per browser, or the URL says model training."""
    ui = ui.rstrip("/")
    where = quote(f"tags.`{GROUP_TAG}` = '{group}'", safe="")
    return {"parent": f"{ui}/#/experiments/{experiment_id}/runs/{parent_run}"
                      f"?workflowType=machine_learning",
            "by variant": f"{ui}/#/experiments/{experiment_id}/runs?viewStateShareKey="
                          f"{view_key(parent_run)}&compareRunsMode=CHART"
                          f"&workflowType=machine_learning",
            "runs": f"{ui}/#/experiments/{experiment_id}/runs?workflowType=machine_learning"
                    f"&searchFilter={where}",
            # runs and experiments first: MLflow 3.17's compare page reads them by position
            # ("undefined is not valid JSON" otherwise)
            "compare": f"{ui}/#/compare-runs?runs={quote(json.dumps(variant_runs))}"
                       f"&experiments={quote(json.dumps([experiment_id]))}"
                       f"&workflowType=machine_learning"}


def newest_comparison(uri: str):
    """The newest comparison's parent run in the tracking store ``uri`` and its variant runs'
    ids, or None."""
    mlflow = client(uri)
    ids = [e.experiment_id for e in mlflow.search_experiments(max_results=1000)]
    found = mlflow.search_runs(ids, filter_string=f"tags.`{ROLE_TAG}` = 'parent'",
                               order_by=["attributes.start_time DESC"], max_results=1)
    if not found:
        return None
    parent = found[0]
    children = mlflow.search_runs(
        [parent.info.experiment_id],
        filter_string=f"tags.`{PARENT_TAG}` = '{parent.info.run_id}'",
        order_by=["attributes.start_time ASC"])
    return parent, [r.info.run_id for r in children]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ui", default="http://127.0.0.1:5000", help="where the UI will be")
    parser.add_argument("--uri", default=os.environ.get("MLFLOW_TRACKING_URI")
                        or "sqlite:///mlflow.db", help="the tracking store")
    args = parser.parse_args()
    db = args.uri.removeprefix("sqlite:///")
    try:  # a missing SQLite file is not created just to find nothing in it
        found = None if db != args.uri and not os.path.exists(db) else newest_comparison(args.uri)
    except Exception as e:  # noqa: BLE001 - the UI starts anyway; say why there is no link
        print(f"no comparison to link to in {args.uri}: {type(e).__name__}: {e}")
        return
    if found is None:
        print(f"no comparison in {args.uri} yet: make quick or dvc repro makes one")
        return
    parent, variant_runs = found
    urls = comparison_urls(args.ui, parent.info.experiment_id, parent.data.tags[GROUP_TAG],
                           variant_runs, parent.info.run_id)
    print(f"newest comparison: {parent.info.run_name}\n"
          f"  the answer:   {urls['parent']}\n"
          f"  by variant:   {urls['by variant']}\n"
          f"  its runs:     {urls['runs']}\n  side by side: {urls['compare']}")


if __name__ == "__main__":
    main()
