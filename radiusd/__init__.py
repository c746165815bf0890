"""radiusd: RADIUS authorization and accounting for VoIP carriers."""

__version__ = "0.1.0"
