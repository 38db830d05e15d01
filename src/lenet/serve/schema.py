"""What the API accepts and answers (also what /openapi.json describes), and every check on a request's
JSON body or form fields.

The JSON body of POST /api/predict is checked here and only here, by `PixelsRequest`; its validators
raise the one-line messages a client sees as {"error": "..."}, so a request can be fixed from the answer.
"""

from __future__ import annotations

import json
import math
from typing import Annotated, Any

import torch
from pydantic import BaseModel, BeforeValidator, Field, ValidationError, model_validator
from pydantic_core import PydanticCustomError
from starlette.datastructures import FormData, UploadFile

from ..inference import SIDE
from .http_errors import ApiError

PIXELS = SIDE * SIDE
_FIELDS = ("pixels", "model")
# 784 pixels take ~3 KB of JSON, pretty-printed as floats under 20 KB: a larger JSON body is no pixels request,
# and the cap keeps parsing it (on the event loop) cheap.
MAX_JSON_BYTES = 64 * 1024
# Longer integer literals are never converted: Python refuses over 4,300 digits, and no pixel needs 20.
_MAX_INT_DIGITS = 20
_MAX_MODEL_NAME = 100  # characters; registered names are short
_SHOWN_CHARS = 40  # of a client's text quoted in an error message


class HugeNumber:
    """A JSON integer literal too long to be a pixel, kept as its length instead of converted."""

    def __init__(self, literal: str) -> None:
        self.digits = len(literal.lstrip("-"))


def _parse_int(literal: str) -> int | HugeNumber:
    return int(literal) if len(literal) <= _MAX_INT_DIGITS else HugeNumber(literal)


def _type_name(value: Any) -> str:
    return "int" if isinstance(value, HugeNumber) else type(value).__name__


def _short(text: str) -> str:
    return text if len(text) <= _SHOWN_CHARS else text[:_SHOWN_CHARS] + "..."


def _shown(value: Any) -> str:
    """A JSON value as an error message quotes it: short, whatever the client sent."""
    if isinstance(value, HugeNumber):
        return f"a whole number of {value.digits:,} digits"
    if isinstance(value, str):
        return json.dumps(_short(value))
    if isinstance(value, list):
        return f"an array of {len(value)} values"
    if isinstance(value, dict):
        return "an object"
    return json.dumps(value)  # a number (NaN and Infinity included), true, false or null


def _invalid(message: str) -> PydanticCustomError:
    # No template context: the message is final, even if it quotes a client's text holding braces.
    return PydanticCustomError("lenet_request", message)


def _check_pixels(value: Any) -> list[int]:
    if not isinstance(value, list):
        raise _invalid(f'"pixels" must be a list of {PIXELS} numbers, not {_type_name(value)}')
    if len(value) != PIXELS:
        raise _invalid(f'"pixels" must hold {PIXELS} values (28x28, row by row), got {len(value)}')
    for i, v in enumerate(value):
        # bool is an int in Python but never a pixel; 12.0 is a whole number, 12.5 is not a grey level
        whole = isinstance(v, int) or (isinstance(v, float) and math.isfinite(v) and v.is_integer())
        if isinstance(v, bool) or not whole or not 0 <= v <= 255:
            raise _invalid(f'"pixels"[{i}] is {_shown(v)}: every value must be a whole number from 0 to 255')
    return [int(v) for v in value]


def _check_model_name(value: Any) -> str | None:
    if value is not None and not isinstance(value, str):
        raise _invalid(f'"model" must be a string, not {_type_name(value)}')
    if value is not None and len(value) > _MAX_MODEL_NAME:
        raise _invalid(f'"model" is {len(value):,} characters long: use a name from GET /api/models')
    return value


class PixelsRequest(BaseModel):
    pixels: Annotated[list[Annotated[int, Field(ge=0, le=255)]], BeforeValidator(_check_pixels)] = Field(
        ..., min_length=PIXELS, max_length=PIXELS,
        description="784 grey values 0-255 (whole numbers), row by row, ink bright on a dark background "
                    "(MNIST polarity); fed to the network as they are")
    model: Annotated[str | None, BeforeValidator(_check_model_name)] = Field(
        None, description="a name from GET /api/models; default: the server's model")

    @model_validator(mode="before")
    @classmethod
    def _an_object_with_pixels(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            raise _invalid(f'JSON body must be an object like {{"pixels": [784 values]}}, not {_type_name(data)}')
        unknown = sorted(set(data) - set(_FIELDS))
        if unknown:
            listed = ", ".join(_short(name) for name in unknown[:5]) + (f" and {len(unknown) - 5} more"
                                                                        if len(unknown) > 5 else "")
            raise _invalid(f"unknown JSON field(s): {listed}; expected pixels and optional model")
        if "pixels" not in data:
            raise _invalid('JSON body has no "pixels": give 784 grey values 0-255 (28x28, ink bright)')
        return data

    @classmethod
    def from_body(cls, body: bytes) -> PixelsRequest:
        """The request in a JSON body; ApiError 413 for a body far larger than any pixels request, 400 for
        malformed JSON (or nested beyond Python's recursion limit), 422 for a wrong field."""
        if len(body) > MAX_JSON_BYTES:
            raise ApiError(413, f"JSON body too large: {len(body):,} bytes; a pixels request (784 numbers) needs "
                                f"far less, the limit is {MAX_JSON_BYTES:,} bytes")
        try:
            payload = json.loads(body, parse_int=_parse_int)
        except UnicodeDecodeError:
            raise ApiError(400, "malformed JSON: the body is not UTF-8 text") from None
        except json.JSONDecodeError as e:
            raise ApiError(400, f"malformed JSON: {e.msg} at line {e.lineno} column {e.colno}") from None
        except RecursionError:  # the C parser's depth guard: still a clean error, never a crash
            raise ApiError(400, 'malformed JSON: nested too deeply; the body is {"pixels": [784 numbers]}') from None
        try:
            return cls.model_validate(payload)
        except ValidationError as e:
            raise ApiError(422, e.errors()[0]["msg"]) from None

    def images(self) -> torch.Tensor:
        """The pixels as the uint8 (1, 28, 28) batch every network reads."""
        return torch.tensor(self.pixels, dtype=torch.uint8).reshape(1, SIDE, SIDE)


def upload_only(body: bytes, content_type: str) -> None:
    """POST /api/read takes a multipart upload only: ApiError 400 for an empty body, 415 for anything else."""
    mime = content_type.split(";", 1)[0].strip().lower()
    if not body:
        raise ApiError(400, "empty request body: send multipart/form-data with an 'image' file (a photo)")
    if mime != "multipart/form-data":
        raise ApiError(415, f"unsupported content type {mime or '(none)'!r}: use multipart/form-data with an "
                            "'image' file")


def upload_fields(form: FormData) -> tuple[UploadFile, str | None]:
    """The 'image' file and the optional 'model' name of a multipart form; ApiError 422 when they are wrong."""
    upload = form.get("image")
    if upload is None:
        raise ApiError(422, f"multipart form has no 'image' file field (fields: {', '.join(form) or 'none'})")
    if not isinstance(upload, UploadFile):
        raise ApiError(422, "form field 'image' must be a file upload, not text")
    if len(form.getlist("image")) > 1:
        raise ApiError(422, "multipart form has several 'image' fields: send one image per request")
    name = form.get("model")
    if name is not None and not isinstance(name, str):
        raise ApiError(422, "form field 'model' must be text, not a file")
    if name is not None and len(name) > _MAX_MODEL_NAME:
        raise ApiError(422, f"form field 'model' is {len(name):,} characters long: use a name from GET /api/models")
    return upload, name or None


class FeatureMap(BaseModel):
    layer: str
    channels: int
    height: int
    width: int
    data: str = Field(..., description="base64 of channels*height*width bytes, each map scaled to 0-255 "
                                       "with the layer's min and max")


class Prediction(BaseModel):
    prediction: int = Field(..., description="the most likely digit")
    probabilities: list[float] = Field(..., description="10 probabilities, for the digits 0-9")
    model: str
    input: list[int] | None = Field(None, description="with ?details=true: the 784 pixels the network saw")
    feature_maps: list[FeatureMap] | None = Field(None, description="with ?details=true: the first layers' maps")


class DigitRead(BaseModel):
    prediction: int = Field(..., description="the most likely digit")
    probabilities: list[float] = Field(..., description="10 probabilities, for the digits 0-9")
    box: list[int] = Field(..., min_length=4, max_length=4,
                           description="[x, y, width, height] in pixels of the image as decoded (EXIF rotation "
                                       "applied), x and y from the top left")
    input: list[int] | None = Field(None, description="with ?details=true: the 784 pixels (28x28, row by row, "
                                                      "ink bright) the network saw for this digit")


class NumberRead(BaseModel):
    number: str = Field(..., description="the digits read, left to right, e.g. \"2026\"")
    digits: list[DigitRead] = Field(..., description="one entry per digit found, left to right")
    model: str
    width: int = Field(..., description="the image's width in pixels, as decoded (EXIF rotation applied)")
    height: int = Field(..., description="the image's height in pixels, as decoded (EXIF rotation applied)")


class ModelEntry(BaseModel):
    name: str
    description: str
    test_accuracy: float | None = Field(None, description="percent on the MNIST test set")
    available: bool = Field(..., description="whether weights are there to serve it")
    source: str = Field(..., description="pretrained, checkpoint, or none")


class ModelsResponse(BaseModel):
    default: str
    models: list[ModelEntry]


class ErrorBody(BaseModel):
    error: str


ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorBody} for code in (400, 404, 409, 413, 415, 422, 503)}


def _upload_body(what: str) -> dict[str, Any]:
    """The multipart form of an image upload, as /openapi.json shows it; `what` describes the image."""
    return {"multipart/form-data": {"schema": {
        "type": "object", "required": ["image"],
        "properties": {"image": {"type": "string", "format": "binary", "description": what},
                       "model": {"type": "string"}}}}}


# The routes read their bodies themselves (an image upload or JSON pixels), so the schema states them by hand.
PREDICT_BODY = {"required": True, "content": {
    **_upload_body("PNG, JPEG, ... of one digit; preprocessed like `lenet predict`"),
    "application/json": {"schema": PixelsRequest.model_json_schema()}}}
READ_BODY = {"required": True, "content": _upload_body(
    "PNG, JPEG, ... of a written number (a phone photo of a notebook page will do); read like "
    "`lenet predict --number`")}
