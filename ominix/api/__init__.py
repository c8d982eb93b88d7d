"""HTTP: the FastAPI app (`app.py`: error bodies, auth, limits), OpenAI's /v1 routes (`openai.py`)
and Prometheus metrics (`metrics.py`). Handlers validate, resolve names without MLX, and hand jobs
to the engine's worker; OpenAI's wording of errors lives here, not in the engine."""
