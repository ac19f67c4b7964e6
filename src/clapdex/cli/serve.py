"""CLI verb: `clapdex serve`, the local web app (a thin layer over clapdex.server.create_app)."""

from __future__ import annotations

import ipaddress
import socket

import click

from clapdex.cli.common import (encoder_options, encoder_settings, index_option, remedy_text,
                                resolve_index_path)
from clapdex.errors import ClapdexError

LOOPBACK_NAMES = ["127.0.0.1", "localhost", "[::1]", "::1"]


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


@click.command("serve")
@index_option
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on. Anything but loopback needs --token.")
@click.option("--port", type=click.IntRange(0, 65535), default=8765, show_default=True,
              help="Port to listen on (0: any free port).")
@click.option("--token", envvar="CLAPDEX_TOKEN", default=None, metavar="TOKEN",
              help="Access token every request must carry (default: $CLAPDEX_TOKEN). "
                   "Required to listen on a non-loopback address.")
@click.option("--open", "open_browser", is_flag=True, help="Open the search page in the browser.")
@click.option("--max-upload-mb", type=click.IntRange(min=1), default=50, show_default=True,
              help="Largest audio file accepted for search by example.")
@encoder_options
def serve_command(index_path, host, port, token, open_browser, max_upload_mb, **kwargs):
    """A local web app to search, listen to and audit the index (read-only), with an HTTP JSON
    API under /api (OpenAPI schema at /openapi.json). Stop it with Ctrl-C."""
    import uvicorn

    from clapdex import open_index
    from clapdex.server import create_app

    if not is_loopback(host) and not token:
        raise ClapdexError(f"listening on {host} makes the index readable from the network: "
                           "give an access token with --token TOKEN (or $CLAPDEX_TOKEN)")
    listener = _bind(host, port)
    port = listener.getsockname()[1]
    index = open_index(resolve_index_path(index_path), **encoder_settings(kwargs))
    app = create_app(index, token=token, max_upload_bytes=max_upload_mb * 1024 * 1024,
                     allowed_hosts=None if token else LOOPBACK_NAMES, remedy_text=remedy_text)
    shown_host = f"[{host}]" if ":" in host and not host.startswith("[") else host
    url = f"http://{shown_host}:{port}/" + (f"?token={token}" if token else "")
    click.echo(f"clapdex serving {index.path} at {url}")
    if token:
        click.echo("every request needs the access token (in the URL above, or the header "
                   "'Authorization: Bearer TOKEN')")
    click.echo("read-only; press Ctrl-C to stop")
    if open_browser:
        import webbrowser

        webbrowser.open(url)
    config = uvicorn.Config(app, log_level="warning", access_log=False)
    try:
        uvicorn.Server(config).run(sockets=[listener])
    except KeyboardInterrupt:  # uvicorn re-raises the Ctrl-C it handled: that is how one stops
        pass
    finally:
        index.close()
        listener.close()
    click.echo("stopped")


def _bind(host: str, port: int) -> socket.socket:
    """The listening socket, bound here so that a port in use is a one-line error."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    listener = socket.socket(family, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    # Accepted connections inherit this: without it a response's headers and body (two writes)
    # wait on the client's delayed ACK, ~40 ms per request (uvicorn sets it only on its own sockets).
    listener.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        listener.bind((host.strip("[]"), port))
    except OSError as error:
        listener.close()
        raise ClapdexError(f"cannot listen on {host}:{port} ({error.strerror or error}); "
                           "pick another --port") from None
    listener.listen(128)
    return listener


COMMANDS = [serve_command]
