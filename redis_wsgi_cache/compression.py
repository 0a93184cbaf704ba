"""Bodies compressed in Redis (``compress = gzip|zstd``): more responses per
gigabyte. A body is compressed once, when it is stored, if it is large enough
(``compress_min_bytes``), of a type that compresses (text, JSON, XML,
JavaScript, SVG…), not already encoded by the app, and smaller for it. A client
that accepts the stored coding gets the stored bytes as they are, with
``Content-Encoding``; any other gets them decoded. Either way the response
says ``Vary: Accept-Encoding``, and a strong ETag is made weak for the encoded
form (RFC 9110 §8.8.1: it is another representation)."""

from __future__ import annotations

import typing as t
import zlib

from werkzeug.http import parse_accept_header

from .directives import header

if t.TYPE_CHECKING:
    from _typeshed.wsgi import WSGIEnvironment

Headers = list[tuple[str, str]]

# Media types worth compressing (by prefix of the lower-cased Content-Type).
_COMPRESSIBLE = (
    "text/",
    "application/json",
    "application/javascript",
    "application/ecmascript",
    "application/xml",
    "application/xhtml+xml",
    "application/rss+xml",
    "application/atom+xml",
    "application/ld+json",
    "application/manifest+json",
    "application/wasm",
    "image/svg+xml",
)
# A compressed body is stored only if it saves at least this share of bytes.
WORTHWHILE = 0.9
# Decoded bodies kept per process by the encoded bytes they came from, so that
# clients that do not accept the coding cost one decompression per stored body,
# not one per hit; at most this many decoded bytes (forgotten all at once).
DECODED_BYTES = 16 * 1024 * 1024
_decoded: dict[bytes, bytes] = {}
_decoded_bytes = 0


def available(coding: str) -> bool:
    """Whether this process can compress with ``coding``."""
    if coding != "zstd":
        return True
    try:
        import zstandard  # noqa: F401
    except ImportError:
        return False
    return True


def compress(coding: str, body: bytes) -> bytes:
    if coding == "gzip":
        # A gzip stream (not raw zlib): what Content-Encoding: gzip means.
        compressor = zlib.compressobj(6, zlib.DEFLATED, 31)
        return compressor.compress(body) + compressor.flush()
    import zstandard

    return zstandard.ZstdCompressor(level=3).compress(body)


def decompress(coding: str, body: bytes) -> bytes:
    if coding == "gzip":
        return zlib.decompress(body, 47)
    import zstandard

    return zstandard.ZstdDecompressor().decompress(body)


def encode(coding: str, min_bytes: int, headers: Headers, body: bytes) -> tuple[bytes, str]:
    """The body to store and its coding (``""``: as it is)."""
    if coding == "off" or len(body) < min_bytes:
        return body, ""
    encoding = header(headers, "content-encoding")
    if encoding is not None and encoding.strip().lower() not in ("", "identity"):
        return body, ""  # the app encoded it: stored as it is
    content_type = (header(headers, "content-type") or "").strip().lower()
    if not content_type.startswith(_COMPRESSIBLE):
        return body, ""
    compressed = compress(coding, body)
    if len(compressed) > len(body) * WORTHWHILE:
        return body, ""
    return compressed, coding


def decoded(coding: str, body: bytes) -> bytes:
    """``body`` decoded (remembered per process, up to ``DECODED_BYTES``)."""
    global _decoded_bytes
    found = _decoded.get(body)
    if found is None:
        found = decompress(coding, body)
        if _decoded_bytes + len(found) > DECODED_BYTES:
            _decoded.clear()
            _decoded_bytes = 0
        if len(found) <= DECODED_BYTES:
            _decoded[body] = found
            _decoded_bytes += len(found)
    return found


def accepts(environ: WSGIEnvironment, coding: str) -> bool:
    """Whether the request accepts ``coding`` (RFC 9110 §12.5.3)."""
    value = environ.get("HTTP_ACCEPT_ENCODING")
    return bool(value) and parse_accept_header(value)[coding] > 0


def representation(
    coding: str, headers: Headers, body: bytes, environ: WSGIEnvironment, whole: bool
) -> tuple[Headers, bytes]:
    """The headers and body to send from an entry stored with ``coding``: the
    stored bytes to a client that accepts them (and wants the ``whole`` body,
    not a range), else the decoded ones."""
    vary = [value for name, value in headers if name.lower() == "vary"]
    names = {item.strip().lower() for value in vary for item in value.split(",")}
    sent = headers
    if "accept-encoding" not in names:
        sent = [(name, value) for name, value in headers if name.lower() != "vary"]
        sent.append(("Vary", ", ".join([*vary, "Accept-Encoding"])))
    if whole and accepts(environ, coding):
        encoded: Headers = []
        for name, value in sent:
            lowered = name.lower()
            if lowered == "content-length":
                value = str(len(body))
            elif lowered == "etag" and not value.startswith("W/"):
                value = "W/" + value
            encoded.append((name, value))
        encoded.append(("Content-Encoding", coding))
        return encoded, body
    return sent, decoded(coding, body)
