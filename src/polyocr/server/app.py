"""polyocr's HTTP API (FastAPI): its own endpoints, jobs, and an OpenAI-compatible chat endpoint.

The app is a thin layer over polyocr's calls: uploads are opened by content, recognised by a
Router in the OCR service's worker threads, and returned as the DocumentResult JSON or rendered by
formats.render. The pieces: context.py (the server's state and the steps handlers share), http.py
(the error shape, the body-size guard, uploads), routes.py (the endpoints). Every error a client can
cause is a 4xx with a JSON body {"error": {"message", "type", "code"}}; nothing a client sends can
stop the server.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI

from polyocr import __version__
from polyocr.config import ServerSettings
from polyocr.server.context import ServerContext
from polyocr.server.http import BodyLimit, install_error_handlers
from polyocr.server.routes import api, probes
from polyocr.server.ui import mount_ui

log = logging.getLogger("polyocr.server")


def create_app(settings: ServerSettings | None = None) -> FastAPI:
    """The polyocr API for these settings; engines load in worker threads, jobs resume from SQLite."""
    settings = settings or ServerSettings()
    ctx = ServerContext(settings)
    app = FastAPI(
        title="polyocr",
        version=__version__,
        lifespan=ctx.lifespan,
        docs_url="/docs",
        description="OCR of images and PDFs with polyocr's engines, jobs for long documents, "
        "and an OpenAI-compatible chat endpoint.",
    )
    app.state.ctx = ctx
    app.state.settings, app.state.service, app.state.store, app.state.runner = (
        settings,
        ctx.service,
        ctx.store,
        ctx.runner,
    )
    if settings.cors_origins:
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(
            CORSMiddleware, allow_origins=list(settings.cors_origins), allow_methods=["*"], allow_headers=["*"]
        )
    app.add_middleware(BodyLimit, limit=settings.max_request_bytes)
    install_error_handlers(app, settings.max_request_bytes)
    app.include_router(api)
    app.include_router(probes)
    mount_ui(app)
    return app


def serve(settings: ServerSettings, *, log_level: str = "info") -> None:
    """Run the server in this process until interrupted.

    Beyond loopback without an API key it refuses to start (ValueError) unless insecure_no_auth is
    set. SIGTERM or Ctrl-C stops every piece of work at its next page at once; open requests get
    `shutdown_grace` seconds, then the job in hand goes back to the queue, and if a page is still in a
    worker after the grace the process exits without waiting for it.
    """
    import os

    import uvicorn

    settings.check_exposure()
    if not settings.is_loopback and not settings.api_key:
        log.warning(
            "polyocr serve: listening on %s without an API key (--insecure-no-auth); anyone who can reach it "
            "can use it",
            settings.host,
        )
    app = create_app(settings)
    ctx: ServerContext = app.state.ctx

    class _Server(uvicorn.Server):
        def handle_exit(self, sig: int, frame: object) -> None:
            ctx.service.stop_work()
            super().handle_exit(sig, frame)  # type: ignore[arg-type]

    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_level=log_level,
        timeout_graceful_shutdown=max(1, round(settings.shutdown_grace)),
    )
    _Server(config).run()
    if not ctx.clean:
        log.warning("polyocr serve: exiting with a page still in a worker (its job was requeued)")
        logging.shutdown()
        os._exit(0)
