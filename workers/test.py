"""The ``test`` job: run an argv on a worker that consumes the ``test`` queue."""
from sentinel_celery.jobs import run_job
from sentinel_celery.task import SentinelTask
from workers import job


@job(base=SentinelTask, bind=True, name="workers.test.run", task_type="test", track_started=True)
def run(self, argv, cwd=None, env=None, timeout=None, github_issue=None, sha=None):
    """Test job: ``argv`` is a list (never a shell string). Returns exit_code, duration, output_tail, worker."""
    return run_job(self, argv, cwd=cwd, env=env, timeout=timeout, github_issue=github_issue, sha=sha)
