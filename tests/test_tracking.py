"""MLflow bookkeeping: where runs go (configured URI, environment, SQLite), the commit."""

from __future__ import annotations

from orchestration.tracking import experiment_id, git_commit, resolve_tracking_uri


def test_configured_uri_wins_over_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow:5000")
    assert resolve_tracking_uri("http://other:5000", str(tmp_path)) == "http://other:5000"


def test_environment_is_used_when_nothing_is_configured(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow:5000")
    assert resolve_tracking_uri("", str(tmp_path)) == "http://mlflow:5000"


def test_default_is_sqlite_in_the_storage_folder(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    store = tmp_path / "runs"
    assert resolve_tracking_uri("", str(store)) == f"sqlite:///{store / 'mlflow.db'}"
    assert store.is_dir()


def test_git_commit_of_an_image_comes_from_its_build_argument(monkeypatch):
    monkeypatch.setenv("CTRLAUG_GIT_COMMIT", "0123abc")
    assert git_commit() == "0123abc"
    monkeypatch.setenv("CTRLAUG_GIT_COMMIT", "unknown")  # the images' default: ask git
    assert git_commit() != "unknown"  # this checkout is a git repository


def test_logging_a_model_leaves_the_process_default_store_alone(tmp_path, monkeypatch):
    """mlflow.set_tracking_uri sets $MLFLOW_TRACKING_URI for the whole process: a logged model
    must not redirect later jobs of the same process (an ablation, a test session)."""
    import os

    import torch
    from mlflow.tracking import MlflowClient

    from orchestration.tracking import RunLogger

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    run = client.create_run(experiment_id(client, "e"))
    RunLogger(uri, run.info.run_id).model(torch.nn.Linear(2, 2), "encoder")
    assert "MLFLOW_TRACKING_URI" not in os.environ
    assert resolve_tracking_uri("", str(tmp_path / "other")).endswith("other/mlflow.db")


def test_ray_workers_get_the_tracking_and_object_store_credentials():
    from orchestration.runtime import forwarded_env

    environ = {"MLFLOW_TRACKING_TOKEN": "t", "MLFLOW_TRACKING_USERNAME": "u",
               "AWS_ACCESS_KEY_ID": "k", "AWS_SECRET_ACCESS_KEY": "s", "HOME": "/root",
               "PATH": "/bin"}
    assert forwarded_env(environ) == {"MLFLOW_TRACKING_TOKEN": "t",
                                      "MLFLOW_TRACKING_USERNAME": "u",
                                      "AWS_ACCESS_KEY_ID": "k", "AWS_SECRET_ACCESS_KEY": "s"}


def test_a_submitted_job_keeps_the_variables_its_runtime_env_sets():
    import json

    from orchestration.runtime import forwarded_env

    # `ray job submit --runtime-env-json '{"env_vars": {...}}'`: the driver's environment holds
    # the job's variables and Ray refuses a ray.init that sets one of them again.
    job = {"runtime_env": {"env_vars": {"AWS_ACCESS_KEY_ID": "k"}, "working_dir": "."}}
    environ = {"AWS_ACCESS_KEY_ID": "k", "MLFLOW_TRACKING_TOKEN": "t",
               "RAY_JOB_CONFIG_JSON_ENV_VAR": json.dumps(job)}
    assert forwarded_env(environ) == {"MLFLOW_TRACKING_TOKEN": "t"}
    assert forwarded_env({**environ, "RAY_JOB_CONFIG_JSON_ENV_VAR": "{}"}) == {
        "AWS_ACCESS_KEY_ID": "k", "MLFLOW_TRACKING_TOKEN": "t"}
