"""What the gateway reads of a request body: its media type and the model it names.

Bodies are JSON only. The llama-server build the rig pins (b11434) parses a multipart/form-data
body on *every* POST route into its JSON body, and its one route that needs it is OpenAI's audio
transcription (a file upload); on every other route JSON is the only type it documents. Those two
paths alone take multipart here; a cross-site page sending one carries an Origin, refused by the
CORS policy unless listed. ``text/plain``, forms and multipart are the types a web page can send
without a preflight: refusing them keeps other pages off the gateway.
"""

from __future__ import annotations

import json
import re
from urllib.parse import parse_qs

from llamastudio.errors import InvalidInput, UnsupportedMediaType

JSON = b"application/json"
MULTIPART = b"multipart/form-data"
_MULTIPART_PATHS = frozenset({"/v1/audio/transcriptions", "/audio/transcriptions"})
_FORM_MODEL = re.compile(
    rb'content-disposition:[^\r\n]*\bname="model"[^\r\n]*\r\n(?:[^\r\n]+\r\n)*\r\n([^\r\n]{1,512})\r\n',
    re.IGNORECASE,
)


def declares_body(headers: list[tuple[bytes, bytes]]) -> bool:
    """Whether ``Content-Length`` announces a body (a chunked one is checked once read)."""
    return any(k == b"content-length" and v.strip() not in (b"", b"0") for k, v in headers)


def media_type(headers: list[tuple[bytes, bytes]], path: str, has_body: bool) -> bytes | None:
    """The body's media type: JSON (multipart on the transcription routes); None without a body.
    Anything else is refused (415) before the body is read or a model is started."""
    if not has_body:
        return None
    ctype = next((v for k, v in headers if k == b"content-type"), b"")
    media = ctype.split(b";", 1)[0].strip().lower()
    if media == JSON or (media == MULTIPART and path in _MULTIPART_PATHS):
        return media
    shown = media.decode("latin-1")[:100] or "no Content-Type"
    raise UnsupportedMediaType(
        f"the request body must be JSON (`Content-Type: application/json`), not {shown}"
    )


def model_name(body: bytes, query: bytes, media: bytes | None) -> str | None:
    """The ``model`` a request names: ``?model=``, else the JSON body's (or the form field's)."""
    if query and b"model=" in query:
        values = parse_qs(query.decode("latin-1")).get("model")
        if values:
            return values[0]
    if not body:
        return None
    if media == MULTIPART:
        found = _FORM_MODEL.search(body)
        return found.group(1).decode(errors="replace").strip() or None if found else None
    try:
        data = json.loads(body)
    except RecursionError:  # e.g. 100,000 `[`: Python's parser recurses per level
        raise InvalidInput("request body is not valid JSON: nested too deeply") from None
    except ValueError:
        raise InvalidInput("request body is not valid JSON") from None
    model = data.get("model") if isinstance(data, dict) else None
    if model is not None and not isinstance(model, str):
        raise InvalidInput("`model` must be a string")
    return model or None
