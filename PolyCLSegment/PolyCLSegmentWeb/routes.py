"""HTTP routes beside trame's page and websocket: the access check in front of all of them, health,
downloads of what Save wrote, and (``--testing`` only) the routes the browser tests read the scene through."""

from __future__ import annotations

import json

from .security import aiohttpMiddleware


def bind(app, wslinkServer):
    """Install the access check and routes of ``app`` (a PolyCLWebApp) on trame's aiohttp server."""
    from aiohttp import web

    http = wslinkServer.app
    http.middlewares.insert(0, aiohttpMiddleware(app.policy))

    async def health(request):
        return web.json_response({"ok": True, "loaded": app.state.polycl_loaded, "busy": bool(app.state.polycl_busy)})

    async def download(request):
        """A file the last Save wrote (nothing else: the name must be one of those just written)."""
        path = app.downloads.get(request.match_info["name"])
        if path is None or not path.is_file() or app.data.root not in path.parents:
            return web.Response(status=404, text="PolyCL web: no such saved file\n")
        return web.FileResponse(path, headers={
            "Content-Disposition": f'attachment; filename="{path.name}"',
            "Content-Type": "application/octet-stream", "Cache-Control": "no-store"})

    http.router.add_get("/polycl/health", health)
    http.router.add_get("/polycl/download/{name}", download)
    if not app.testing:
        return

    async def red(request):
        return web.json_response(app.red.viewPoints(json.loads(request.query.get("ijk", "[]"))))

    async def active(request):
        import slicer

        segId = app.editor.active_segment_id
        voxels = 0
        if segId and app.volumeNode is not None:
            voxels = int(slicer.util.arrayFromSegmentBinaryLabelmap(app.segmentationNode, segId, app.volumeNode).sum())
        return web.json_response({"segmentId": segId, "voxels": voxels, "prompts": app.state.polycl_prompts,
                                  "tool": app.state.polycl_tool, "busy": app.controller.busy,
                                  "message": app.state.polycl_message, "error": app.state.polycl_error,
                                  "loaded": app.state.polycl_loaded, "confirm": app.state.polycl_confirm,
                                  "color": next((r["color"] for r in app.controller.segments(app.segmentationNode)
                                                 if r["id"] == segId), None) if segId else None,
                                  "unsaved": app.hasUnsavedWork()})

    http.router.add_get("/polycl/test/red", red)
    http.router.add_get("/polycl/test/active", active)
