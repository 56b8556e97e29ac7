"""REST service for vinted-tagger: ``create_app`` builds the FastAPI app, ``run`` serves it (``vinted-serve``)."""

from service.app import create_app, run
from service.settings import Settings

__all__ = ["Settings", "create_app", "run"]
