"""The comparison in MLflow: its tags, its parent run, and where the UI shows the newest one.

A comparison is a parent run (tag ``pipeline.role=parent``, keyed by ``pipeline.group``: a hash of
the params the trained models depend on) with one child run per variant (MLflow's
``mlflow.parentRunId``). Grouping happens in one place, the evaluate stage, the one stage that
sees every variant (:func:`comparison_parent`, then a parent tag on each variant's run): training
runs know nothing of comparisons. Light on purpose (MLflow is imported inside the function):
``make ui`` runs

    python -m pipeline.comparison --ui http://127.0.0.1:5000

which prints where the UI shows the newest comparison: its experiment's runs table filtered on
it (the parent is the only top-level row; its ``+`` expands it into the variants, a state the UI
keeps per browser and no link can set), and MLflow's compare page of its variant runs.
"""

from __future__ import annotations

import argparse
import json
import os
from dataclasses import dataclass
from urllib.parse import quote

from .store import git_commit

GROUP_TAG = "pipeline.group"
ROLE_TAG = "pipeline.role"
PARENT_TAG = "mlflow.parentRunId"
# what MLflow 3's UI reads to open an experiment on its runs (model training) rather than on
# its GenAI overview; the value is the UI's ExperimentKind.CUSTOM_MODEL_DEVELOPMENT
KIND_TAG, KIND = "mlflow.experimentKind", "custom_model_development"
# a variant run's colour in the UI's table and charts, by its place in the comparison (MLflow
# would otherwise give every child of a parent the same one); matplotlib's tab10
COLOR_TAG = "mlflow.runColor"
COLORS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
          "#7f7f7f", "#bcbd22", "#17becf")


@dataclass(frozen=True)
class Group:
    """One comparison: the key of its params and the variants it compares."""

    key: str
    name: str
    variants: tuple[str, ...]


def comparison_group(params) -> Group:
    """The :class:`Group` of a :class:`pipeline.config.Params`."""
    key = params.group_key()
    name = f"{params.base.dataset}: {' vs '.join(params.variants)} [{key[:8]}]"
    return Group(key=key, name=name[:250], variants=tuple(params.variants))


def comparison_parent(client, experiment_id: str, group: Group) -> str:
    """The run id of ``group``'s parent run in the experiment, created (FINISHED: a container,
    not a job) if there is none yet. Marks the experiment as model training for the UI."""
    client.set_experiment_tag(experiment_id, KIND_TAG, KIND)
    found = client.search_runs(
        [experiment_id],
        filter_string=f"tags.`{GROUP_TAG}` = '{group.key}' and tags.`{ROLE_TAG}` = 'parent'",
        order_by=["attributes.start_time ASC"], max_results=1,
    )
    if found:
        return found[0].info.run_id
    tags = {GROUP_TAG: group.key, ROLE_TAG: "parent", "variants": ", ".join(group.variants)}
    commit = git_commit()
    if commit:
        tags["mlflow.source.git.commit"] = commit
    run = client.create_run(experiment_id, run_name=group.name, tags=tags)
    client.set_terminated(run.info.run_id, "FINISHED")
    return run.info.run_id


def comparison_urls(ui: str, experiment_id: str, group: str, variant_runs: list[str]) -> dict:
    """Where the UI at ``ui`` shows a comparison: its runs in the experiment's table (the parent
    listed, its variants one click away), and the compare page of its variant runs (params,
    metrics and plots side by side). ``workflowType``: MLflow 3.17 opens an experiment as a GenAI
    app unless its sidebar switch, remembered per browser, or the URL says model training."""
    ui = ui.rstrip("/")
    where = quote(f"tags.`{GROUP_TAG}` = '{group}'", safe="")
    return {"runs": f"{ui}/#/experiments/{experiment_id}/runs?workflowType=machine_learning"
                    f"&searchFilter={where}",
            # runs and experiments first: MLflow 3.17's compare page reads them by position
            # ("undefined is not valid JSON" otherwise)
            "compare": f"{ui}/#/compare-runs?runs={quote(json.dumps(variant_runs))}"
                       f"&experiments={quote(json.dumps([experiment_id]))}"
                       f"&workflowType=machine_learning"}


def newest_comparison(uri: str):
    """The newest comparison's parent run in the tracking store ``uri`` and its variant runs'
    ids, or None."""
    from mlflow import MlflowClient

    client = MlflowClient(uri)
    ids = [e.experiment_id for e in client.search_experiments(max_results=1000)]
    found = client.search_runs(ids, filter_string=f"tags.`{ROLE_TAG}` = 'parent'",
                               order_by=["attributes.start_time DESC"], max_results=1)
    if not found:
        return None
    parent = found[0]
    children = client.search_runs(
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
                           variant_runs)
    print(f"newest comparison: {parent.info.run_name}\n"
          f"  its runs:   {urls['runs']}\n  side by side: {urls['compare']}")


if __name__ == "__main__":
    main()
