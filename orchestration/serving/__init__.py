"""Composed search as a service: `compodiff serve` puts the trained model and the FAISS index behind an
HTTP API and a web page (FastAPI + uvicorn), with concurrent queries micro-batched into one denoiser pass."""
