"""`clapdex serve`: a local web app to search, listen and audit, over an HTTP JSON API.

    from clapdex.server import create_app
    app = create_app(clapdex.open_index(path))   # an ASGI app; serve it with uvicorn

app.py (routes and errors), media.py (audio: range requests, segment WAV), guard.py (token, Host
header, security headers), static/ (the pages: plain HTML, CSS and JavaScript, no build step).
"""

from clapdex.server.app import create_app

__all__ = ["create_app"]
