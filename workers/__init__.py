"""The built-in job tasks, one module per queue: build, test, deploy."""
