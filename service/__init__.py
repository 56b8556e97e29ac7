"""REST service for vinted-tagger: ``create_app`` builds the FastAPI app, ``run`` serves it (``vinted-serve``).

Importing the package needs no FastAPI (the serve extra): ``create_app`` and ``run`` import service.app on
first use, so ``vinted-serve`` without the extra reaches its one-line install hint.
"""

from service.settings import Settings

__all__ = ["Settings", "create_app", "run"]


def __getattr__(name: str):
    if name in ("create_app", "run"):
        from service import app

        return getattr(app, name)
    raise AttributeError(f"module 'service' has no attribute {name!r}")
