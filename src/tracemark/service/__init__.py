"""``tracemark serve``: the HTTP service (FastAPI on uvicorn), behind the ``service`` extra."""
