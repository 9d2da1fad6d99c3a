"""MLflow bookkeeping: where runs go (configured URI, environment, SQLite), the commit."""

from __future__ import annotations

from orchestration.tracking import experiment_id, git_commit, job_run, resolve_tracking_uri


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


def test_a_job_is_its_name_in_its_storage_path(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    first = job_run(uri, "pretrain", "ucf101-r3d18", "/runs/a/ucf101-r3d18", {})
    assert job_run(uri, "pretrain", "ucf101-r3d18", "/runs/a/ucf101-r3d18", {}) == first
    other = job_run(uri, "pretrain", "ucf101-r3d18", "/runs/b/ucf101-r3d18", {})
    assert other != first  # the same name in another storage path is another job
    assert job_run(uri, "pretrain", "ucf101-r3d18", "/runs/b/ucf101-r3d18", {}) == other


def test_a_job_is_found_among_more_runs_of_its_name_than_one_search_page(tmp_path,
                                                                          monkeypatch):
    import orchestration.tracking as tracking

    monkeypatch.setattr(tracking, "SEARCH_PAGE", 2)
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    runs = [job_run(uri, "pretrain", "job", f"/runs/{i}/job", {}) for i in range(5)]
    assert len(set(runs)) == 5
    assert [job_run(uri, "pretrain", "job", f"/runs/{i}/job", {}) for i in range(5)] == runs


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


def _log_the_shards_at_once(uri: str, shards: str, barrier, results) -> None:
    """One of several processes: a run of its own, then the same shard folder as its input,
    all processes released together."""
    from mlflow.tracking import MlflowClient

    from orchestration.tracking import log_shards_input

    client = MlflowClient(uri)
    run_id = client.create_run(client.get_experiment_by_name("jobs").experiment_id).info.run_id
    barrier.wait()
    try:
        log_shards_input(client, run_id, shards, "training")
        results.put("ok")
    except Exception as error:  # noqa: BLE001 - reported to the test
        results.put(f"{type(error).__name__}: {str(error)[:200]}")


def test_jobs_side_by_side_log_the_same_new_dataset(tmp_path, shards):
    # ctrlaug ablate --jobs N: jobs start together on one fresh store and log the same train
    # shards; MLflow's look-up-then-insert broke the unique key for all but one of them.
    import multiprocessing

    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    experiment = MlflowClient(uri).create_experiment("jobs")
    context = multiprocessing.get_context("spawn")
    barrier, results = context.Barrier(4), context.Queue()
    processes = [context.Process(target=_log_the_shards_at_once,
                                 args=(uri, str(shards["frames"]), barrier, results))
                 for _ in range(4)]
    for process in processes:
        process.start()
    for process in processes:
        process.join(timeout=300)
    assert [results.get(timeout=10) for _ in processes] == ["ok"] * 4
    runs = MlflowClient(uri).search_runs([experiment])
    assert len(runs) == 4
    assert all([d.dataset.name for d in run.inputs.dataset_inputs] == [shards["frames"].name]
               for run in runs)
