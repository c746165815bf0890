"""`radiusd web`: serve the admin web application (and its JSON API) with uvicorn;
`radiusd web user ...` / `radiusd web token ...` manage who may log in or call the API."""
from __future__ import annotations

import sys

from sqlalchemy.exc import DBAPIError

from radiusd.cli_output import UserError, common_options, first_line, safe_url
from radiusd.config import load_settings
from radiusd.web import users_cli


def register(subparsers) -> None:
    web = subparsers.add_parser(
        "web", parents=[common_options()], help="the admin web application and its JSON API",
        description="Serve the admin web pages and the JSON API (/api/v1). With no action: serve on "
                    "--bind/--port (default 127.0.0.1:8080, or the [web] section of the settings).")
    web.add_argument("--bind", metavar="ADDR", help="address to listen on (default 127.0.0.1)")
    web.add_argument("--port", type=int, help="TCP port (default 8080)")
    web.set_defaults(func=cmd_web)
    actions = web.add_subparsers(dest="web_command", metavar="ACTION")
    users_cli.add_arguments(actions)


def web_url(settings) -> str:
    host = settings.web_bind
    if ":" in host:
        host = f"[{host}]"
    if host in ("0.0.0.0", "[::]"):
        host = "127.0.0.1"
    return f"http://{host}:{settings.web_port}/"


def cmd_web(args) -> int:
    import uvicorn

    from radiusd.logging_setup import configure
    from radiusd.web.app import create_app

    if args.port is not None and not 1 <= args.port <= 65535:
        raise UserError(f"--port: {args.port} is not a TCP port")
    settings = load_settings(getattr(args, "config", None), database_url=getattr(args, "database_url", None),
                             web_bind=args.bind, web_port=args.port)
    _probe(settings.web_bind, settings.web_port)
    configure(settings.log_level)
    try:
        app = create_app(settings)
    except DBAPIError as exc:
        raise UserError(f"database_url: cannot open the store: {first_line(exc)} "
                        f"({safe_url(settings.database_url)})") from None
    print(f"radiusd web admin on {web_url(settings)} (store {safe_url(settings.database_url)}); Ctrl-C stops it.",
          flush=True)
    try:
        uvicorn.run(app, host=settings.web_bind, port=settings.web_port, log_level="warning",
                    proxy_headers=False, server_header=False)
    except OSError as exc:
        print(f"radiusd: error: web {settings.web_bind}:{settings.web_port}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    finally:
        if app.state.engine is not None:
            app.state.engine.dispose()
    return 0


def _probe(host: str, port: int) -> None:
    """Say so before printing a URL that could not work: the port is taken or the address is not ours."""
    import socket

    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise UserError(f"--bind: {host}: {exc.strerror}") from None
    family, kind, proto, _name, address = infos[0]
    with socket.socket(family, kind, proto) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(address)
        except OSError as exc:
            raise UserError(f"web {host}:{port}: {exc.strerror}") from None
