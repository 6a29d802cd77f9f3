"""polyocr over HTTP: `create_app(settings)` builds the FastAPI app that `polyocr serve` runs."""

from polyocr.server.app import create_app
from polyocr.server.settings import ServerSettings

__all__ = ["ServerSettings", "create_app"]
