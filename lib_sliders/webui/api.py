"""HTTP routes: ``GET /sliders/v1/sliders`` (installed sliders with what their files recommend) and
``POST /sliders/v1/refresh`` (rescan the folders). Registered in ``on_app_started``."""

from __future__ import annotations

from .user_metadata import merged_info, read_user_metadata


def slider_list(library) -> list[dict]:
    items = []
    for name in library.names():
        entry = library.get(name)
        if entry is None:
            continue
        info = merged_info(library.info(name), read_user_metadata(entry.path))
        items.append({
            "name": name,
            "alias": info["alias"],
            "path": info["path"],
            "arch": info["arch"],
            "alpha_range": list(info["alpha_range"]),
            "default_start": info["default_start"],
            "description": info["description"],
            "metadata": entry.metadata,
        })
    return items


def register_routes(app, library) -> None:
    """``library`` is a callable returning the current ``SliderLibrary``."""

    @app.get("/sliders/v1/sliders")
    def get_sliders():
        return slider_list(library())

    @app.post("/sliders/v1/refresh")
    def refresh_sliders():
        library().refresh()
        return {"count": len(library().names())}
