"""Double of ``modules_forge/forge_version.py`` at Forge ``dfdcbab`` (Forge Classic says "classic", Neo "neo")."""

version = "2.0.1v1.10.1"
