"""HTTP front ends: thin FastAPI routers over services/."""
