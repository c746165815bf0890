"""The dashboard: calls in progress, calls per second, ASR/ACD over the last hour, top clients,
and a bar chart of answered and failed calls (SVG drawn here: no script, no chart library)."""
from __future__ import annotations

from fastapi import Request
from markupsafe import Markup, escape

from radiusd.admin import audit, dashboard
from radiusd.web.common import page_router, read, render

router = page_router()


def bar_chart(series: list[dict], width: int = 640, height: int = 200) -> Markup:
    """Stacked bars (answered green, failed red) per time bucket, with a y scale and time labels."""
    left, bottom, top = 36, 22, 10
    plot_w, plot_h = width - left - 8, height - bottom - top
    peak = max([s["answered"] + s["failed"] for s in series] + [1])
    scale = _nice(peak)
    slot = plot_w / max(len(series), 1)
    parts = [f'<svg class="chart" viewBox="0 0 {width} {height}" width="100%" role="img" '
             f'aria-label="answered and failed calls per {len(series)} intervals of the last hour">']
    for tick in (0, scale / 2, scale):
        y = top + plot_h - plot_h * tick / scale
        parts.append(f'<line x1="{left}" x2="{width - 8}" y1="{y:.1f}" y2="{y:.1f}" stroke="#e3e8ee"/>')
        parts.append(f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end">{tick:g}</text>')
    for i, s in enumerate(series):
        x = left + i * slot + slot * 0.15
        w = slot * 0.7
        ok_h = plot_h * s["answered"] / scale
        bad_h = plot_h * s["failed"] / scale
        y_ok = top + plot_h - ok_h
        label = escape(f'{s["start"]:%H:%M}: {s["answered"]} answered, {s["failed"]} failed')
        parts.append(f'<g><title>{label}</title>'
                     f'<rect x="{x:.1f}" y="{y_ok:.1f}" width="{w:.1f}" height="{ok_h:.1f}" fill="#43a047"/>'
                     f'<rect x="{x:.1f}" y="{y_ok - bad_h:.1f}" width="{w:.1f}" height="{bad_h:.1f}" '
                     f'fill="#e53935"/></g>')
        if i % 2 == 0:
            parts.append(f'<text x="{x + w / 2:.1f}" y="{height - 6}" text-anchor="middle">'
                         f'{s["start"]:%H:%M}</text>')
    parts.append("</svg>")
    return Markup("".join(parts))


def _nice(peak: int) -> float:
    """A round top for the y scale (1, 2, 5 × 10^n) at or above the peak."""
    magnitude = 1
    while True:
        for step in (1, 2, 5):
            if step * magnitude >= peak:
                return step * magnitude
        magnitude *= 10


@router.get("/")
def home(request: Request):
    now = audit.utcnow()
    with read(request) as session:
        figures = dashboard.traffic(session, now)
    return render(request, "dashboard.html", f=figures, chart=bar_chart(figures["series"]))
