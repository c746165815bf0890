"""The admin web application: pages for the carrier's daily work and the JSON API under /api/v1.

`create_app(settings)` opens the store and returns a FastAPI application; `radiusd web` serves it
with uvicorn. Pages call the admin module (the same functions as the CLI) and audit every change
with the logged-in user as actor and context `web`.
"""
from __future__ import annotations

import anyio
from fastapi import FastAPI, Request
from fastapi.responses import PlainTextResponse
from fastapi.staticfiles import StaticFiles
from starlette.middleware.base import BaseHTTPMiddleware

from radiusd.admin import users
from radiusd.db import open_store
from radiusd.logging_setup import get_logger
from radiusd.store.sealing import attach_key_file
from radiusd.web import security
from radiusd.web.common import HERE, LoginRequired, Refused, check_csrf, form_of, redirect, render

log = get_logger()


class SessionMiddleware(BaseHTTPMiddleware):
    """Loads the signed session cookie into request.state.session and writes it back, refreshed.

    A visitor without a (valid) session gets an anonymous one: it carries the CSRF token the
    login form needs. The JSON API authenticates by bearer token and gets no cookie.
    """

    async def dispatch(self, request: Request, call_next):
        if request.url.path.startswith("/api/") or request.url.path.startswith("/static/"):
            return await call_next(request)
        codec: security.SessionCodec = request.app.state.codec
        now = security.now()
        session, expired = codec.loads(request.cookies.get(security.COOKIE), now)
        if session is None:
            session = codec.new(now)
            if expired:
                session["expired"] = True
        session["seen"] = now
        request.state.session = session
        response = await call_next(request)
        session = request.state.session
        settings = request.app.state.settings
        secure = settings.web_secure_cookies == "true" or (
            settings.web_secure_cookies == "auto" and request.url.scheme == "https")
        response.set_cookie(security.COOKIE, codec.dumps(session), httponly=True, samesite="strict", secure=secure,
                            path="/")
        response.headers.setdefault("X-Frame-Options", "DENY")
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("Referrer-Policy", "same-origin")
        response.headers.setdefault("Cache-Control", "no-store")
        return response


def create_app(settings, *, sessions=None) -> FastAPI:
    """The application for `settings` (store, [web] section); `sessions` overrides the store."""
    engine = None
    if sessions is None:
        engine, sessions = open_store(settings.database_url)
        attach_key_file(sessions, settings.secrets_key_file, settings.database_url)
    app = FastAPI(title="radiusd admin", version="1", docs_url="/api/docs", redoc_url=None,
                  openapi_url="/api/v1/openapi.json")
    app.state.settings = settings
    app.state.sessions = sessions
    app.state.engine = engine
    app.state.codec = security.SessionCodec(security.load_or_create_key(security.key_file_for(settings)),
                                            settings.web_idle_timeout)
    app.state.limiter = security.LoginLimiter()
    app.add_middleware(SessionMiddleware)
    app.mount("/static", StaticFiles(directory=str(HERE / "static")), name="static")

    @app.exception_handler(LoginRequired)
    async def _login_required(request: Request, exc: LoginRequired):
        return redirect("/login", next=exc.next_url)

    @app.exception_handler(Refused)
    async def _refused(request: Request, exc: Refused):
        log.warning("web.refused", path=request.url.path, user=request.state.session.get("user"), reason=str(exc))
        if request.headers.get("accept", "").startswith("text/html"):
            return render(request, "refused.html", status_code=exc.status, message=str(exc))
        return PlainTextResponse(str(exc), status_code=exc.status)

    @app.get("/login", include_in_schema=False)
    def login_page(request: Request, next: str = "/"):
        expired = request.state.session.pop("expired", False)
        return render(request, "login.html", next=_safe_next(next), expired=expired, error=None)

    @app.post("/login", include_in_schema=False)
    async def login(request: Request):
        await check_csrf(request)
        form = await form_of(request)
        return await _login(request, form)

    @app.post("/logout", include_in_schema=False)
    async def logout(request: Request):
        await check_csrf(request)
        session = request.state.session
        if session.get("user"):
            log.info("web.logout", user=session["user"])
        request.app.state.codec.end(session, security.now())
        request.state.session = request.app.state.codec.new(security.now())
        return redirect("/login")

    from radiusd.web import accounts, api, dashboard, screens

    app.include_router(dashboard.router)
    app.include_router(accounts.router)
    app.include_router(screens.router)
    app.include_router(api.router)
    return app


def _safe_next(target: str) -> str:
    """Only a path on this site (no //host, no scheme): a login link must not send the user away."""
    if not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    return target


async def _login(request: Request, form):
    name = str(form.get("name") or "")
    password = str(form.get("password") or "")
    target = _safe_next(str(form.get("next") or "/"))
    address = request.client.host if request.client else "unknown"
    limiter: security.LoginLimiter = request.app.state.limiter
    now = security.now()
    wait = limiter.retry_after(name, address, now)
    if wait:
        log.warning("web.login_blocked", user=name[:100], address=address, retry_after=wait)
        return render(request, "login.html", status_code=429, next=target, expired=False,
                      error=f"Too many failed logins: try again in {wait} s.")

    def verify():
        with request.app.state.sessions.begin() as session:
            return users.verify_login(session, name, password)

    who = await anyio.to_thread.run_sync(verify)
    if who is None:
        limiter.failed(name, address, now)
        log.warning("web.login_failed", user=name[:100], address=address)
        return render(request, "login.html", status_code=401, next=target, expired=False,
                      error="Wrong user name or password.")
    limiter.succeeded(name, address)
    log.info("web.login", user=who.name, role=who.role, address=address)
    # a new session id and CSRF token at login: a session fixed before login is worth nothing after
    request.app.state.codec.end(request.state.session, now)
    request.state.session = request.app.state.codec.new(now, user=who.name, role=who.role)
    return redirect(target)

