"""polyocr over HTTP: `create_app(settings)` builds the FastAPI app that `polyocr serve` runs."""

from polyocr.config import ServerSettings
from polyocr.server.app import create_app

__all__ = ["ServerSettings", "create_app"]
