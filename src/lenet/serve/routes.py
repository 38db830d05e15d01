"""The URLs: the page, liveness, the list of networks, one digit (/api/predict) and a photographed number
(/api/read).

Each route finds what it needs on `request.app.state` (set up by `create_app`): `store` (ModelStore),
`pool` (InferencePool), `settings` (Settings) and `index_html`."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse

from .._version import __version__
from .http_errors import ApiError
from .reading import decode_upload, read_digit, read_photo
from .schema import (
    ERROR_RESPONSES,
    PREDICT_BODY,
    READ_BODY,
    ModelsResponse,
    NumberRead,
    PixelsRequest,
    Prediction,
    upload_fields,
    upload_only,
)

router = APIRouter()


@router.get("/", response_class=HTMLResponse, include_in_schema=False)
async def index(request: Request) -> HTMLResponse:
    return HTMLResponse(request.app.state.index_html)


@router.get("/healthz", summary="liveness")
async def healthz(request: Request) -> dict[str, Any]:
    return {"status": "ok", "version": __version__, "default_model": request.app.state.store.default}


@router.get("/api/models", response_model=ModelsResponse, summary="the networks this server can run")
async def api_models(request: Request) -> dict[str, Any]:
    return request.app.state.store.describe()


# HEAD wherever GET works (HTTP asks it; uptime monitors use it): the same handler, the body left unsent.
for _path, _endpoint in (("/", index), ("/healthz", healthz), ("/api/models", api_models)):
    router.add_api_route(_path, _endpoint, methods=["HEAD"], include_in_schema=False)


@router.post("/api/predict", response_model=Prediction, response_model_exclude_none=True,
             responses=ERROR_RESPONSES, summary="read one digit", openapi_extra={"requestBody": PREDICT_BODY})
async def api_predict(request: Request, details: bool = Query(
        False, description="also return the 28x28 input the network saw and its first feature maps")) -> Any:
    body = await request.body()
    mime = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if not body:
        raise ApiError(400, "empty request body: send multipart/form-data with an 'image' file, "
                            'or JSON {"pixels": [784 values]}')
    if mime == "application/json":
        return await _predict_pixels(request, PixelsRequest.from_body(body), details)
    if mime == "multipart/form-data":
        return await _predict_upload(request, details)
    raise ApiError(415, f"unsupported content type {mime or '(none)'!r}: use multipart/form-data with an "
                        "'image' file, or application/json with 784 pixels")


async def _predict_pixels(request: Request, pixels: PixelsRequest, details: bool) -> dict[str, Any]:
    state = request.app.state
    name = state.store.check(pixels.model)
    images = pixels.images()
    return await state.pool.run(lambda: read_digit(state.store.get(name), images, name, details))


async def _uploaded(request: Request) -> tuple[bytes, str]:
    """The bytes of a multipart form's 'image' file and the network to read it with (checked)."""
    # Two files at most, so that a 'model' sent as a file is named as the mistake it is (refused below).
    form = await request.form(max_files=2, max_fields=4)
    try:
        upload, name = upload_fields(form)
        data = await upload.read()
    finally:
        await form.close()  # its spooled files
    if not data:
        raise ApiError(400, "the uploaded 'image' file is empty")
    return data, request.app.state.store.check(name)


async def _predict_upload(request: Request, details: bool) -> dict[str, Any]:
    state = request.app.state
    data, name = await _uploaded(request)
    max_pixels = state.settings.max_image_pixels
    return await state.pool.run(lambda: read_digit(state.store.get(name), decode_upload(data, max_pixels), name,
                                                   details))


@router.post("/api/read", response_model=NumberRead, response_model_exclude_none=True,
             responses=ERROR_RESPONSES, summary="read a written number from a photo",
             description="Finds the digits written on the photo (a notebook page, uneven light, ruled lines), "
                         "left to right, and reads each one: the same as `lenet predict --number --json`, plus "
                         "the network and the image's size, which the boxes are in. No digit found: 422.",
             openapi_extra={"requestBody": READ_BODY})
async def api_read(request: Request, details: bool = Query(
        False, description="also return, for each digit, the 28x28 input the network saw")) -> Any:
    upload_only(await request.body(), request.headers.get("content-type", ""))
    state = request.app.state
    data, name = await _uploaded(request)
    max_pixels = state.settings.max_image_pixels
    return await state.pool.run(lambda: read_photo(state.store.get(name), data, max_pixels, name, details))
