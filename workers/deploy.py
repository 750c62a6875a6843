"""The ``deploy`` job: run an argv while holding a fenced lease on the target environment."""
from sentinel_celery.jobs import run_job
from sentinel_celery.task import SentinelTask
from workers import job


@job(base=SentinelTask, bind=True, name="workers.deploy.run", task_type="deploy", track_started=True,
     lock_key="deploy:{environment}", lock_contention="retry")
def run(self, argv, environment="production", cwd=None, env=None, timeout=None, github_issue=None, sha=None):
    """Deploy job: one deploy per ``environment`` at a time; the command stops if the lease is lost."""
    return run_job(self, argv, cwd=cwd, env=env, timeout=timeout, github_issue=github_issue, sha=sha)
