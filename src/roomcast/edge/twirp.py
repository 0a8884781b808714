"""Twirp v8 codec: protobuf and JSON bodies, and the error format
(docs/protocol/08-server-api.md §8.1-8.2)."""

from __future__ import annotations

import json
from collections.abc import Mapping

from aiohttp import web
from google.protobuf import json_format
from google.protobuf.message import DecodeError, Message

from roomcast.errors import RoomcastError

PROTOBUF = "application/protobuf"
JSON = "application/json"

# Twirp spec: error code → HTTP status.
STATUS_BY_CODE = {
    "canceled": 408,
    "unknown": 500,
    "invalid_argument": 400,
    "malformed": 400,
    "deadline_exceeded": 408,
    "not_found": 404,
    "bad_route": 404,
    "already_exists": 409,
    "permission_denied": 403,
    "unauthenticated": 401,
    "resource_exhausted": 429,
    "failed_precondition": 412,
    "aborted": 409,
    "out_of_range": 400,
    "unimplemented": 501,
    "internal": 500,
    "unavailable": 503,
    "dataloss": 500,
}


def http_status_for(error: RoomcastError) -> int:
    """The HTTP status of an error's code (also used for refused WebSocket upgrades)."""
    return STATUS_BY_CODE.get(error.code, 500)


class TwirpError(Exception):
    """A Twirp error: every API failure, authentication included, answers with its JSON body
    (``{"code", "msg"}``), which is what the server SDKs turn into their error's message."""

    def __init__(
        self,
        code: str,
        msg: str,
        meta: Mapping[str, str] | None = None,
        status: int | None = None,
    ) -> None:
        super().__init__(msg)
        self.code = code
        self.msg = msg
        self.meta = dict(meta or {})
        # The HTTP status when it is not the code's own (413 for a body refused on its size).
        self.status = status or STATUS_BY_CODE.get(code, 500)

    @classmethod
    def from_domain(cls, error: RoomcastError) -> TwirpError:
        return cls(error.code, str(error), getattr(error, "meta", None))

    def to_response(self) -> web.Response:
        body: dict[str, object] = {"code": self.code, "msg": self.msg}
        if self.meta:
            body["meta"] = self.meta
        # Node only parses the error when Content-Type is exactly application/json.
        return web.Response(
            status=self.status,
            body=json.dumps(body).encode(),
            headers={"Content-Type": JSON},
        )


def content_type_of(request: web.Request) -> str:
    """The media type without parameters, lower-cased (``application/json;charset=UTF-8``)."""
    raw = request.headers.get("Content-Type", "")
    return raw.split(";", 1)[0].strip().lower()


def decode(body: bytes, content_type: str, message: Message) -> None:
    """Fill ``message`` from a request body; raise ``malformed`` if it does not decode."""
    if content_type == PROTOBUF:
        try:
            message.ParseFromString(body)
        except (DecodeError, ValueError, RuntimeError) as exc:
            raise TwirpError("malformed", f"the request could not be decoded: {exc}") from exc
        return
    try:
        text = body.decode("utf-8") if body else "{}"
        # Accepts camelCase and snake_case names, enum names or numbers, int64 as strings.
        json_format.Parse(text, message, ignore_unknown_fields=True)
    except (json_format.ParseError, UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise TwirpError("malformed", f"the json request could not be decoded: {exc}") from exc


def encode(message: Message, content_type: str) -> web.Response:
    if content_type == PROTOBUF:
        return web.Response(body=message.SerializeToString(), content_type=PROTOBUF)
    # Twirp's defaults: original proto field names, unpopulated fields included.
    as_dict = json_format.MessageToDict(
        message,
        preserving_proto_field_name=True,
        always_print_fields_with_no_presence=True,
    )
    return web.Response(body=json.dumps(as_dict).encode(), content_type=JSON)
