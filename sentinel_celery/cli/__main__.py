"""``python -m sentinel_celery.cli``: the same as the ``sentinel`` console script."""
from sentinel_celery.cli import main

main()
