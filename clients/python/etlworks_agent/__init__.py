"""Python client and command-line tool for the etlworks-agent server and the Etlworks AI Agent API.

This one file is the whole client: the :class:`EtlworksAgent` SDK, its exceptions, the
server-sent-events reader behind :meth:`EtlworksAgent.chat_stream`, and the command-line tool.
It needs only ``requests`` and Python 3.9+, so it works both as the installed package
``etlworks_agent`` (``pip install ./clients/python``) and as a single downloaded file
``etlworks_agent.py`` (the server offers it at ``GET /downloads/etlworks_agent.py``).

Library use::

    from etlworks_agent import EtlworksAgent

    agent = EtlworksAgent()  # ETLWORKS_URL and ETLWORKS_API_KEY from the environment
    print(agent.chat("list connections")["response"])
    for event in agent.chat_stream("how do I schedule a flow?"):
        if event["type"] == "token":
            print(event["content"], end="", flush=True)

Command line (``python -m etlworks_agent`` or ``python etlworks_agent.py``)::

    export ETLWORKS_URL=http://127.0.0.1:8080 ETLWORKS_API_KEY=...
    python -m etlworks_agent tools
    python -m etlworks_agent tool search_knowledge_base '{"query": "merge keys"}'
    python -m etlworks_agent chat-stream "create a connection to api.example.com"

Exit codes: 0 success, 1 the server refused or failed the request (or could not be reached),
2 a usage error (bad arguments, invalid JSON, ETLWORKS_URL or ETLWORKS_API_KEY not set).
"""

from __future__ import annotations

import argparse
import email.utils
import json
import os
import random
import re
import sys
import time
from datetime import datetime, timezone
from typing import IO, Any, Dict, Generator, Iterable, Iterator, List, Mapping, Optional, Tuple, Type, Union
from urllib.parse import quote

import requests

__version__ = "0.1.0"

__all__ = [
    "API_PATH",
    "ENV_API_KEY",
    "ENV_URL",
    "APIConnectionError",
    "APIError",
    "APITimeoutError",
    "AuthenticationError",
    "BadRequestError",
    "CapExceededError",
    "ChatStream",
    "ConfigurationError",
    "EtlworksAgent",
    "EtlworksError",
    "InternalServerError",
    "NotFoundError",
    "PayloadTooLargeError",
    "PermissionDeniedError",
    "RateLimitError",
    "StreamError",
    "main",
]

#: Where the Agent API lives under the instance root given in ``ETLWORKS_URL``.
API_PATH = "/rest/v1/ai-agent/api"
#: The environment variable with the instance root URL, e.g. ``http://127.0.0.1:8080``.
ENV_URL = "ETLWORKS_URL"
#: The environment variable with the API key (``Authorization: Bearer <key>``).
ENV_API_KEY = "ETLWORKS_API_KEY"

#: Seconds to wait for the server's answer (between bytes, for streams) unless told otherwise.
DEFAULT_TIMEOUT = 120.0
#: Seconds to wait for a TCP connection when ``timeout`` is a single number.
DEFAULT_CONNECT_TIMEOUT = 10.0
#: Retries after the first attempt, for the failures that may be retried (see ``EtlworksAgent``).
DEFAULT_MAX_RETRIES = 2
#: A ``Retry-After`` longer than this is not waited for: the error is raised at once.
MAX_RETRY_AFTER = 60.0

_BASE_BACKOFF = 0.25
_MAX_BACKOFF = 8.0

JSONDict = Dict[str, Any]
Timeout = Union[float, Tuple[float, float]]


# ---------------------------------------------------------------------------------------------
# Exceptions
# ---------------------------------------------------------------------------------------------


class EtlworksError(Exception):
    """Base class of every error this client raises."""


class ConfigurationError(EtlworksError, ValueError):
    """The client is not set up: no URL or key, or a URL that cannot be right."""


class APIConnectionError(EtlworksError):
    """The server could not be reached, or the connection broke before an answer came.

    ``url`` is the address that was tried.
    """

    def __init__(self, message: str, *, url: Optional[str] = None) -> None:
        super().__init__(message)
        self.message = message
        self.url = url


class APITimeoutError(APIConnectionError):
    """The server did not answer within the timeout."""


class APIError(EtlworksError):
    """The server answered with an error.

    Attributes:
        message: the server's sentence saying what went wrong and what to do.
        status: the HTTP status (200 for a failure reported inside a successful answer, such as
            a chat run that ended without an answer or an ``error`` event in a stream).
        code: the API's stable error code, e.g. ``session_not_found`` or ``cap_exceeded``.
        request_id: the ``x-request-id`` of the answer; quote it when asking about a failure.
        body: the error body as the server sent it (a dict), when it was JSON.
        retry_after: seconds the server asked to wait (``Retry-After``), when it said.
    """

    def __init__(
        self,
        message: str,
        *,
        status: Optional[int] = None,
        code: Optional[str] = None,
        request_id: Optional[str] = None,
        body: Optional[JSONDict] = None,
        retry_after: Optional[float] = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.code = code
        self.request_id = request_id
        self.body = body
        self.retry_after = retry_after

    def __str__(self) -> str:
        details = []
        if self.status is not None and self.status != 200:
            details.append(f"HTTP {self.status}")
        if self.code:
            details.append(f"code {self.code}")
        if self.request_id:
            details.append(f"request id {self.request_id}")
        return f"{self.message} ({', '.join(details)})" if details else self.message


class BadRequestError(APIError):
    """400: the request was malformed, or a tool's arguments did not fit its schema."""


class AuthenticationError(APIError):
    """401: the API key is missing, malformed, unknown, revoked or expired."""


class PermissionDeniedError(APIError):
    """403: the key's role may not do this (e.g. an agentic tool with a read-only key)."""


class NotFoundError(APIError):
    """404: no such session, tool, key or endpoint (``code`` tells which)."""


class PayloadTooLargeError(APIError):
    """413: the request body or the chat message is over the server's limit."""


class RateLimitError(APIError):
    """429: the key sent more requests than its rate limit allows; see ``retry_after``."""


class InternalServerError(APIError):
    """5xx: the server failed or is unavailable; its log has details under ``request_id``."""


class CapExceededError(APIError):
    """The tenant's AI usage cap is spent (code ``cap_exceeded``)."""


class StreamError(APIError):
    """A chat stream broke: it ended before its ``done`` event, or sent something unreadable."""


_STATUS_ERRORS: Dict[int, Type[APIError]] = {
    400: BadRequestError,
    401: AuthenticationError,
    403: PermissionDeniedError,
    404: NotFoundError,
    413: PayloadTooLargeError,
    429: RateLimitError,
}


def _error_class(status: Optional[int], code: Optional[str]) -> Type[APIError]:
    if code == "cap_exceeded":
        return CapExceededError
    if status is not None:
        if status in _STATUS_ERRORS:
            return _STATUS_ERRORS[status]
        if status >= 500:
            return InternalServerError
    return APIError


def _error_from_body(
    status: int,
    body: Any,
    *,
    request_id: Optional[str],
    retry_after: Optional[float] = None,
    fallback: str,
) -> APIError:
    """Builds the exception for an error body ``{"success": false, "error", "code"}``."""
    message = fallback
    code = None
    if isinstance(body, dict):
        if isinstance(body.get("error"), str) and body["error"]:
            message = body["error"]
        if isinstance(body.get("code"), str):
            code = body["code"]
    cls = _error_class(status, code)
    return cls(
        message,
        status=status,
        code=code,
        request_id=request_id,
        body=body if isinstance(body, dict) else None,
        retry_after=retry_after,
    )


# ---------------------------------------------------------------------------------------------
# Server-sent events
# ---------------------------------------------------------------------------------------------

_LINE_BREAK = re.compile(r"\r\n|\r|\n")


def _iter_lines(chunks: Iterable[str]) -> Iterator[str]:
    """Splits decoded text chunks into lines at CRLF, CR or LF, as the SSE format defines them.

    ``str.splitlines`` (which ``requests.Response.iter_lines`` uses) would also split at
    U+2028, U+0085 and other characters that a JSON string may carry unescaped, cutting an
    event's data in two; and a CRLF split across two chunks must still count as one break.
    """
    buffer = ""
    skip_lf = False
    first = True
    for chunk in chunks:
        if not chunk:
            continue
        if first:
            chunk = chunk.lstrip("\ufeff")
            first = False
        if skip_lf:
            skip_lf = False
            if chunk.startswith("\n"):
                chunk = chunk[1:]
        buffer += chunk
        parts = _LINE_BREAK.split(buffer)
        buffer = parts.pop()
        if not buffer and chunk.endswith("\r"):
            skip_lf = True
        yield from parts
    if buffer:
        yield buffer


def _iter_sse(chunks: Iterable[str]) -> Iterator[Tuple[str, str]]:
    """Yields ``(event, data)`` for each event of a ``text/event-stream``.

    Several ``data:`` lines of one event are joined with newlines; comment lines (``:`` first,
    such as the server's ``: keep-alive``) and the ``id`` and ``retry`` fields are ignored. An
    event cut off by the end of the stream (no blank line after it) is dropped, as the format
    requires.
    """
    event = ""
    data: List[str] = []
    for line in _iter_lines(chunks):
        if not line:
            if data:
                yield (event or "message", "\n".join(data))
            event = ""
            data = []
            continue
        if line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        if value.startswith(" "):
            value = value[1:]
        if name == "event":
            event = value
        elif name == "data":
            data.append(value)


class ChatStream:
    """The events of one streamed chat run, read as they arrive.

    Iterate over it to get each event as a dict with a ``type``: ``start``, ``token``
    (``content``), ``tool_start`` (``id``, ``name``, ``arguments``), ``tool_end`` (``id``,
    ``name``, ``success``, ``result``, ``duration_ms``), ``usage`` and, last, ``done`` (the
    whole ``/chat`` answer). An ``error`` event is raised as an :class:`APIError` (a
    :class:`CapExceededError` for ``cap_exceeded``), and a stream that ends without ``done``
    raises :class:`StreamError`, so a loop that finishes normally has seen the whole answer.

    Use it as a context manager (or call :meth:`close`) to release the connection when you
    stop early; leaving a stream before ``done`` cancels the run on the server.

    Attributes:
        text: the ``token`` contents received so far, concatenated.
        final: the ``done`` event once it arrived, else ``None``.
        request_id: the answer's ``x-request-id``.
    """

    def __init__(self, response: requests.Response) -> None:
        self._response = response
        self.request_id: Optional[str] = response.headers.get("x-request-id")
        self.text = ""
        self.final: Optional[JSONDict] = None
        self._events: Generator[JSONDict, None, None] = self._read()

    def __iter__(self) -> "ChatStream":
        return self

    def __next__(self) -> JSONDict:
        return next(self._events)

    def __enter__(self) -> "ChatStream":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Closes the connection; the server cancels the run if it had not finished."""
        self._events.close()
        self._response.close()

    def iter_text(self) -> Iterator[str]:
        """Yields only the text fragments (the ``token`` contents) of the answer."""
        for event in self:
            if event.get("type") == "token":
                yield str(event.get("content", ""))

    def get_final_response(self) -> JSONDict:
        """Reads the stream to its end and returns the ``done`` event (the whole answer)."""
        for _ in self:
            pass
        if self.final is None:  # pragma: no cover - _read raises before this can happen
            raise StreamError("the stream ended before its 'done' event", request_id=self.request_id)
        return self.final

    def _chunks(self) -> Iterator[str]:
        # SSE is UTF-8 by definition; requests would guess ISO-8859-1 for text/* without a charset.
        self._response.encoding = "utf-8"
        # chunk_size=None hands over each chunk as it arrives, so tokens are not held back.
        return self._response.iter_content(chunk_size=None, decode_unicode=True)

    def _read(self) -> Generator[JSONDict, None, None]:
        try:
            for name, data in _iter_sse(self._chunks()):
                try:
                    event = json.loads(data)
                except ValueError:
                    raise StreamError(
                        f"the server sent a '{name}' event whose data is not JSON: {data[:200]!r}",
                        status=self._response.status_code,
                        code="bad_stream",
                        request_id=self.request_id,
                    ) from None
                if not isinstance(event, dict):
                    event = {"type": name, "data": event}
                event.setdefault("type", name)
                kind = event.get("type")
                if kind == "token":
                    self.text += str(event.get("content", ""))
                elif kind == "error":
                    raise _error_from_body(
                        self._response.status_code,
                        event,
                        request_id=self.request_id,
                        fallback="the run failed and the server gave no reason",
                    )
                yield event
                if kind == "done":
                    self.final = event
                    return
        except requests.RequestException as exc:
            raise StreamError(
                f"the stream broke before its 'done' event: {_describe_requests_error(exc)}",
                status=self._response.status_code,
                code="incomplete_stream",
                request_id=self.request_id,
            ) from exc
        finally:
            self._response.close()
        raise StreamError(
            "the stream ended before its 'done' event: the server closed the connection early "
            "(did it stop, or did a proxy cut the connection?); what was said is kept in the "
            "session, if there was one",
            status=self._response.status_code,
            code="incomplete_stream",
            request_id=self.request_id,
        )


# ---------------------------------------------------------------------------------------------
# The client
# ---------------------------------------------------------------------------------------------


def _describe_requests_error(exc: BaseException) -> str:
    """A short reason for a requests failure, without urllib3's object reprs."""
    text = str(exc)
    found = re.search(r"\[Errno -?\d+\] ([^')\]]+)", text)
    if found:
        return found.group(1).strip().rstrip("'\"").lower()
    for needle, reason in (
        ("Connection refused", "connection refused"),
        ("Name or service not known", "the host name is unknown"),
        ("timed out", "timed out"),
        ("Connection aborted", "the connection was closed by the server"),
        ("Connection reset", "the connection was reset"),
        ("RemoteDisconnected", "the server closed the connection without answering"),
        ("CERTIFICATE_VERIFY_FAILED", "the server's TLS certificate could not be verified"),
        ("IncompleteRead", "the connection closed in the middle of the answer"),
        ("InvalidChunkLength", "the connection closed in the middle of the answer"),
    ):
        if needle in text:
            return reason
    return text if len(text) <= 300 else text[:300] + "..."


def _nothing_was_sent(exc: requests.RequestException) -> bool:
    """True when the request never reached the server, so even a POST can be sent again."""
    if isinstance(exc, requests.exceptions.ConnectTimeout):
        return True
    if isinstance(exc, requests.exceptions.ConnectionError):
        reason = exc.args[0] if exc.args else None
        reason = getattr(reason, "reason", reason)
        return type(reason).__name__ in ("NewConnectionError", "NameResolutionError", "ConnectTimeoutError")
    return False


def _parse_retry_after(value: Optional[str]) -> Optional[float]:
    """Seconds from a ``Retry-After`` header (a number of seconds or an HTTP date)."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return max(0.0, (when - datetime.now(timezone.utc)).total_seconds())


def _normalize_base_url(url: str) -> str:
    url = url.strip().rstrip("/")
    if not re.match(r"^https?://[^/]", url, re.IGNORECASE):
        raise ConfigurationError(
            f"the server URL {url!r} must start with http:// or https://; give the instance "
            f"root, e.g. {ENV_URL}=http://127.0.0.1:8080"
        )
    # Accept the API's own address too: people often paste it from the docs.
    if url.lower().endswith(API_PATH):
        url = url[: -len(API_PATH)]
    return url


class EtlworksAgent:
    """A client for the Agent API of an etlworks-agent server (or an Etlworks instance).

    Args:
        base_url: the instance root, e.g. ``http://127.0.0.1:8080`` (without ``/rest``); read
            from ``ETLWORKS_URL`` when not given.
        api_key: the API key; read from ``ETLWORKS_API_KEY`` when not given.
        timeout: seconds to wait for an answer (for streams: between two pieces of it), or a
            ``(connect, read)`` pair. Default 120 s (connect: 10 s).
        max_retries: how many times a failed request is sent again, after a jittered
            exponential backoff (0.25 s, 0.5 s, 1 s, ... at most 8 s) or the server's
            ``Retry-After`` (up to 60 s). Reads and deletes are retried on 429, 5xx and
            connection errors; requests that change something (chat, tool calls, creating a
            session) only when the server certainly did not act on them: 429, 503, or a
            connection that could not be opened. A stream is never retried once it started.
        session: a ``requests.Session`` to use (for proxies, certificates, adapters).

    Raises:
        ConfigurationError: no URL or key was given or found in the environment.

    Every method returns the API's JSON answer as a dict (``result["response"]``,
    ``kb["result"]``) except :meth:`create_session`, which returns the new session's id, and
    the ``*_stream`` methods, which return a :class:`ChatStream`. Failures raise
    :class:`APIError` subclasses (by status, or :class:`CapExceededError` by code) or
    :class:`APIConnectionError`.
    """

    def __init__(
        self,
        base_url: Optional[str] = None,
        api_key: Optional[str] = None,
        *,
        timeout: Timeout = DEFAULT_TIMEOUT,
        max_retries: int = DEFAULT_MAX_RETRIES,
        session: Optional[requests.Session] = None,
    ) -> None:
        if base_url is None:
            base_url = os.environ.get(ENV_URL) or None
        if not base_url:
            raise ConfigurationError(
                f"{ENV_URL} is not set; set it to the server's root URL, e.g. "
                f"export {ENV_URL}=http://127.0.0.1:8080 (or pass base_url=...)"
            )
        if api_key is None:
            api_key = os.environ.get(ENV_API_KEY) or None
        if not api_key or not api_key.strip():
            raise ConfigurationError(
                f"{ENV_API_KEY} is not set; set it to an API key, e.g. "
                f"export {ENV_API_KEY}=$(cat data/admin.key) (or pass api_key=...)"
            )
        if max_retries < 0:
            raise ConfigurationError(f"max_retries must be 0 or more, got {max_retries}")
        self.base_url = _normalize_base_url(base_url)
        self.api_url = self.base_url + API_PATH
        self.api_key = api_key.strip()
        self.timeout: Tuple[float, float] = (
            (min(DEFAULT_CONNECT_TIMEOUT, float(timeout)), float(timeout))
            if isinstance(timeout, (int, float))
            else (float(timeout[0]), float(timeout[1]))
        )
        self.max_retries = max_retries
        self._http = session or requests.Session()
        self._owns_http = session is None

    def __repr__(self) -> str:
        return f"EtlworksAgent(base_url={self.base_url!r})"

    def __enter__(self) -> "EtlworksAgent":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Closes the pooled connections (only those of a session this client created)."""
        if self._owns_http:
            self._http.close()

    # -- tools -----------------------------------------------------------------------------

    def list_tools(self) -> JSONDict:
        """The tool catalogue: ``{"tools": [{"name", "description", "parameters", "agentic"}], "count"}``."""
        return self._json("GET", "/tools", idempotent=True)

    def execute_tool(self, name: str, args: Optional[Mapping[str, Any]] = None) -> JSONDict:
        """Runs one tool with its arguments (a flat dict; ``{}`` when it takes none).

        Returns ``{"success", "tool", "result" (text), "data" (JSON), "duration_ms"}``. A tool
        that ran and failed (an unknown flow, a failed run) is an answer too: ``success`` is
        ``False``, ``code`` is ``tool_failed`` and ``result`` says why; nothing is raised.

        Raises:
            NotFoundError: no tool by that name (code ``tool_not_found``).
            BadRequestError: the arguments do not fit the tool's schema (``invalid_arguments``).
            PermissionDeniedError: an agentic tool (``host_cli``, ``import_template``) with a
                read-only key.
        """
        if args is not None and not isinstance(args, Mapping):
            raise TypeError(f"args must be a dict of the tool's arguments, got {type(args).__name__}")
        return self._json(
            "POST",
            f"/tools/{quote(name, safe='')}/execute",
            body=dict(args or {}),
            idempotent=False,
            allow_codes=("tool_failed",),
        )

    # -- chat ------------------------------------------------------------------------------

    def chat(
        self,
        message: str,
        *,
        include_tools: bool = True,
        system_prompt: Optional[str] = None,
        max_tokens: Optional[int] = None,
        temperature: Optional[float] = None,
        model: Optional[str] = None,
    ) -> JSONDict:
        """Sends one message through the agent and returns its whole answer.

        Returns ``{"success", "response", "tools_used", "tool_calls", "usage", "model",
        "duration_ms", "finish"}``. A run that ends without an answer raises :class:`APIError`
        with its code (``llm_unavailable``, ``canceled``; :class:`CapExceededError` for
        ``cap_exceeded``).
        """
        body = _chat_body(message, include_tools, system_prompt, max_tokens, temperature, model)
        return self._json("POST", "/chat", body=body, idempotent=False)

    def chat_stream(
        self,
        message: str,
        *,
        include_tools: bool = True,
        system_prompt: Optional[str] = None,
        max_tokens: Optional[int] = None,
        temperature: Optional[float] = None,
        model: Optional[str] = None,
    ) -> ChatStream:
        """Like :meth:`chat`, but returns a :class:`ChatStream` of the run's events as they happen."""
        body = _chat_body(message, include_tools, system_prompt, max_tokens, temperature, model)
        return self._stream("/chat/stream", body)

    # -- sessions --------------------------------------------------------------------------

    def create_session(
        self,
        *,
        system_prompt: Optional[str] = None,
        include_tools: Optional[bool] = None,
        title: Optional[str] = None,
        metadata: Optional[Mapping[str, Any]] = None,
    ) -> str:
        """Starts a multi-turn session and returns its id (``ses_...``).

        ``system_prompt`` and ``include_tools`` become the defaults of the session's turns;
        ``title`` and ``metadata`` (a dict) are kept with it for you.
        """
        body: JSONDict = {}
        if system_prompt is not None:
            body["system_prompt"] = system_prompt
        if include_tools is not None:
            body["include_tools"] = include_tools
        if title is not None:
            body["title"] = title
        if metadata is not None:
            body["metadata"] = dict(metadata)
        answer = self._json("POST", "/sessions", body=body, idempotent=False)
        session_id = answer.get("session_id")
        if not isinstance(session_id, str):
            raise APIError(
                "the server created a session but did not say its id",
                status=200,
                body=answer,
            )
        return session_id

    def session_chat(
        self,
        session_id: str,
        message: str,
        *,
        include_tools: Optional[bool] = None,
        system_prompt: Optional[str] = None,
        max_tokens: Optional[int] = None,
        temperature: Optional[float] = None,
        model: Optional[str] = None,
    ) -> JSONDict:
        """Sends a message inside a session; the agent sees the session's earlier turns.

        Options left as ``None`` take the session's values. Returns what :meth:`chat` returns,
        plus ``session_id``. Raises :class:`NotFoundError` (``session_not_found``) for an
        unknown, deleted or other tenant's session.
        """
        body = _chat_body(message, include_tools, system_prompt, max_tokens, temperature, model)
        return self._json("POST", f"/sessions/{_segment(session_id)}/chat", body=body, idempotent=False)

    def session_chat_stream(
        self,
        session_id: str,
        message: str,
        *,
        include_tools: Optional[bool] = None,
        system_prompt: Optional[str] = None,
        max_tokens: Optional[int] = None,
        temperature: Optional[float] = None,
        model: Optional[str] = None,
    ) -> ChatStream:
        """Like :meth:`session_chat`, streamed as a :class:`ChatStream`."""
        body = _chat_body(message, include_tools, system_prompt, max_tokens, temperature, model)
        return self._stream(f"/sessions/{_segment(session_id)}/chat/stream", body)

    def session_messages(
        self, session_id: str, *, limit: Optional[int] = None, offset: Optional[int] = None
    ) -> JSONDict:
        """A session's messages, oldest first: ``{"session_id", "messages": [...], "count"}``.

        Each message has ``id``, ``role`` (``user``, ``assistant`` or ``tool``), ``content``,
        ``tool_calls`` and ``created_at``; tool messages also ``tool_call_id``, ``name`` and
        ``success``. The server answers 100 by default; page with ``limit`` and ``offset``.
        """
        return self._json(
            "GET",
            f"/sessions/{_segment(session_id)}/messages",
            params=_page(limit, offset),
            idempotent=True,
        )

    def list_sessions(self, *, limit: Optional[int] = None, offset: Optional[int] = None) -> JSONDict:
        """The tenant's sessions, most recently used first: ``{"sessions", "count", "total"}``."""
        return self._json("GET", "/sessions", params=_page(limit, offset), idempotent=True)

    def get_session(self, session_id: str) -> JSONDict:
        """One session's details: ``{"session": {"id", "title", "message_count", ...}}``."""
        return self._json("GET", f"/sessions/{_segment(session_id)}", idempotent=True)

    def delete_session(self, session_id: str) -> JSONDict:
        """Deletes a session and all its messages; returns ``{"success": true}``."""
        return self._json("DELETE", f"/sessions/{_segment(session_id)}", idempotent=True)

    # -- plumbing --------------------------------------------------------------------------

    def _json(
        self,
        method: str,
        path: str,
        *,
        body: Optional[JSONDict] = None,
        params: Optional[Mapping[str, Any]] = None,
        idempotent: bool,
        allow_codes: Tuple[str, ...] = (),
    ) -> JSONDict:
        response = self._send(method, path, body=body, params=params, idempotent=idempotent)
        request_id = response.headers.get("x-request-id")
        answer = self._decode(response)
        if answer.get("success") is False and answer.get("code") not in allow_codes:
            raise _error_from_body(
                response.status_code,
                answer,
                request_id=request_id,
                fallback="the server reported a failure without saying why",
            )
        return answer

    def _stream(self, path: str, body: JSONDict) -> ChatStream:
        response = self._send(
            "POST",
            path,
            body=body,
            idempotent=False,
            stream=True,
            accept="text/event-stream",
        )
        content_type = response.headers.get("content-type", "")
        if "text/event-stream" not in content_type:
            # Not a stream: a JSON answer (e.g. a failure reported with status 200) or a proxy page.
            answer = self._decode(response)
            raise _error_from_body(
                response.status_code,
                answer,
                request_id=response.headers.get("x-request-id"),
                fallback=f"the server answered {content_type or 'no content type'} instead of an "
                "event stream",
            )
        return ChatStream(response)

    def _decode(self, response: requests.Response) -> JSONDict:
        try:
            answer = response.json()
        except ValueError:
            kind = response.headers.get("content-type", "no content type")
            raise APIError(
                f"{response.url} answered HTTP {response.status_code} with {kind}, not the "
                f"Agent API's JSON; is {ENV_URL} ({self.base_url}) the etlworks-agent server's "
                "root URL?",
                status=response.status_code,
                request_id=response.headers.get("x-request-id"),
            ) from None
        finally:
            response.close()
        if not isinstance(answer, dict):
            raise APIError(
                f"{response.url} answered JSON that is not an object",
                status=response.status_code,
                request_id=response.headers.get("x-request-id"),
            )
        return answer

    def _send(
        self,
        method: str,
        path: str,
        *,
        body: Optional[JSONDict] = None,
        params: Optional[Mapping[str, Any]] = None,
        idempotent: bool,
        stream: bool = False,
        accept: str = "application/json",
    ) -> requests.Response:
        """Sends one request, retrying what may be retried; returns a 2xx response."""
        url = self.api_url + path
        headers = {
            "Authorization": f"Bearer {self.api_key}",
            "Accept": accept,
            "User-Agent": f"etlworks-agent-python/{__version__}",
        }
        data = None
        if body is not None:
            headers["Content-Type"] = "application/json"
            data = json.dumps(body).encode("utf-8")
        attempt = 0
        while True:
            try:
                response = self._http.request(
                    method,
                    url,
                    params=params,
                    data=data,
                    headers=headers,
                    timeout=self.timeout,
                    stream=stream,
                )
            except requests.exceptions.Timeout as exc:
                connect = isinstance(exc, requests.exceptions.ConnectTimeout)
                if attempt < self.max_retries and (idempotent or connect):
                    time.sleep(_backoff(attempt))
                    attempt += 1
                    continue
                what = "connect to" if connect else "get an answer from"
                limit = self.timeout[0] if connect else self.timeout[1]
                raise APITimeoutError(
                    f"could not {what} {self.base_url} within {limit:g} s; is the server up and "
                    f"{ENV_URL} right? (raise the timeout with timeout=...)",
                    url=url,
                ) from exc
            except requests.RequestException as exc:
                if attempt < self.max_retries and (idempotent or _nothing_was_sent(exc)):
                    time.sleep(_backoff(attempt))
                    attempt += 1
                    continue
                raise APIConnectionError(
                    f"cannot connect to {self.base_url}: {_describe_requests_error(exc)}; is the "
                    f"etlworks-agent server running there, and is {ENV_URL} right?",
                    url=url,
                ) from exc
            status = response.status_code
            if status < 400:
                return response
            retry_after = _parse_retry_after(response.headers.get("retry-after"))
            # 429 and 503 mean the server did not act on the request, so anything may be resent.
            may_retry = status in (429, 503) or (status >= 500 and idempotent)
            if may_retry and attempt < self.max_retries and (retry_after or 0) <= MAX_RETRY_AFTER:
                response.close()
                time.sleep(retry_after if retry_after is not None else _backoff(attempt))
                attempt += 1
                continue
            raise self._http_error(response, retry_after)

    def _http_error(self, response: requests.Response, retry_after: Optional[float]) -> APIError:
        request_id = response.headers.get("x-request-id")
        text = ""
        try:
            body: Any = response.json()
        except ValueError:
            body = None
            text = " ".join(response.text.split())[:200]
        finally:
            response.close()
        reason = response.reason or ""
        if isinstance(body, dict) and isinstance(body.get("error"), str):
            fallback = ""
        elif body is None and text:
            fallback = (
                f"{response.url} answered HTTP {response.status_code} {reason} without the API's "
                f"error body ({text!r}); is {ENV_URL} ({self.base_url}) the etlworks-agent "
                "server's root URL?"
            )
        else:
            fallback = f"{response.url} answered HTTP {response.status_code} {reason}".rstrip()
        return _error_from_body(
            response.status_code, body, request_id=request_id, retry_after=retry_after, fallback=fallback
        )


def _backoff(attempt: int) -> float:
    delay: float = min(_MAX_BACKOFF, _BASE_BACKOFF * (2**attempt))
    return delay * random.uniform(0.75, 1.25)


def _segment(value: str) -> str:
    if not isinstance(value, str) or not value:
        raise TypeError(f"a session id must be a non-empty string, got {value!r}")
    return quote(value, safe="")


def _page(limit: Optional[int], offset: Optional[int]) -> Dict[str, int]:
    params: Dict[str, int] = {}
    if limit is not None:
        params["limit"] = limit
    if offset is not None:
        params["offset"] = offset
    return params


def _chat_body(
    message: str,
    include_tools: Optional[bool],
    system_prompt: Optional[str],
    max_tokens: Optional[int],
    temperature: Optional[float],
    model: Optional[str],
) -> JSONDict:
    if not isinstance(message, str):
        raise TypeError(f"message must be a string, got {type(message).__name__}")
    body: JSONDict = {"message": message}
    if include_tools is not None:
        body["include_tools"] = include_tools
    if system_prompt is not None:
        body["system_prompt"] = system_prompt
    if max_tokens is not None:
        body["max_tokens"] = max_tokens
    if temperature is not None:
        body["temperature"] = temperature
    if model is not None:
        body["model"] = model
    return body


# ---------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------

_EXIT_OK = 0
_EXIT_API = 1
_EXIT_USAGE = 2

_TOOL_EXAMPLE = 'tool search_knowledge_base \'{"query": "merge keys", "limit": 3}\''

_EPILOG = f"""\
environment:
  {ENV_URL}       the server's root URL, e.g. http://127.0.0.1:8080 (without /rest)
  {ENV_API_KEY}   the API key

examples:
  %(prog)s tools
  %(prog)s {_TOOL_EXAMPLE}
  %(prog)s tool host_cli '{{"command": "list connections"}}'
  %(prog)s chat "how do I schedule a flow?"
  %(prog)s chat-stream "create a connection to api.example.com"
  SID=$(%(prog)s session-create --title billing)
  %(prog)s session-chat "$SID" "create a connection to api.example.com"
  %(prog)s session-chat-stream "$SID" "schedule it every hour"
  %(prog)s session-messages "$SID"

exit codes: 0 ok, 1 the server refused or failed the request (or was unreachable), 2 usage error
"""


class _UsageError(Exception):
    """A mistake on the command line: printed as one line, exit code 2."""


def _build_parser(prog: str) -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--json",
        action="store_true",
        default=argparse.SUPPRESS,
        help="print the server's JSON answers (one event per line for streams)",
    )
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Talk to an etlworks-agent server (the Etlworks AI Agent API): tools, chat, "
        "streaming and sessions.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--json", action="store_true", default=False, help="print the server's JSON answers")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.required = True

    def add(name: str, help_text: str) -> argparse.ArgumentParser:
        return commands.add_parser(name, help=help_text, description=help_text, parents=[common])

    add("tools", "list the tools")
    tool = add("tool", "run one tool with JSON arguments")
    tool.add_argument("name", help="the tool, e.g. search_knowledge_base or host_cli")
    tool.add_argument(
        "arguments", nargs="?", default="{}", help="the arguments as a JSON object (default {})"
    )
    for name, help_text in (
        ("chat", "send one message to the agent and print its answer"),
        ("chat-stream", "send one message and print the answer as it is written, with tool calls"),
    ):
        chat = add(name, help_text)
        chat.add_argument("message")
        _add_chat_options(chat)
    create = add("session-create", "start a session and print its id")
    create.add_argument("--title", help="a title to tell the session apart")
    create.add_argument("--system-prompt", help="a system prompt for every turn")
    for name, help_text in (
        ("session-chat", "send a message inside a session and print the answer"),
        ("session-chat-stream", "send a message inside a session, streaming the answer"),
    ):
        chat = add(name, help_text)
        chat.add_argument("session_id", metavar="ID")
        chat.add_argument("message")
        _add_chat_options(chat)
    messages = add("session-messages", "print a session's messages")
    messages.add_argument("session_id", metavar="ID")
    messages.add_argument("--limit", type=int, help="at most this many (server default 100)")
    messages.add_argument("--offset", type=int, help="skip this many first")
    listing = add("session-list", "list the sessions")
    listing.add_argument("--limit", type=int, help="at most this many (server default 50)")
    listing.add_argument("--offset", type=int, help="skip this many first")
    delete = add("session-delete", "delete a session and its messages")
    delete.add_argument("session_id", metavar="ID")
    return parser


def _add_chat_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--system-prompt", help="sent to the model before the conversation")
    parser.add_argument(
        "--no-tools", action="store_true", help="answer from the conversation alone, without tools"
    )


def _one_line(text: str, limit: int = 160) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _print_json(value: Any, out: IO[str]) -> None:
    out.write(json.dumps(value, indent=2, ensure_ascii=False) + "\n")


def _print_tools(answer: JSONDict, out: IO[str]) -> None:
    tools = answer.get("tools") or []
    width = max((len(str(t.get("name", ""))) for t in tools), default=0) + 11
    for t in tools:
        label = f"{t.get('name')}{' (agentic)' if t.get('agentic') else ''}"
        description = str(t.get("description", ""))
        first = re.split(r"(?<=\.)\s", description, maxsplit=1)[0]
        out.write(f"{label:<{width}} {_one_line(first, 110)}\n")


def _print_sessions(answer: JSONDict, out: IO[str]) -> None:
    sessions = answer.get("sessions") or []
    if not sessions:
        out.write("no sessions\n")
        return
    for s in sessions:
        title = s.get("title") or "-"
        out.write(
            f"{s.get('id')}  {s.get('message_count', 0):>4} messages  "
            f"updated {s.get('updated_at', '-')}  {title}\n"
        )
    total = answer.get("total")
    if isinstance(total, int) and total > len(sessions):
        out.write(f"({len(sessions)} of {total}; see --limit and --offset)\n")


def _print_messages(answer: JSONDict, out: IO[str]) -> None:
    messages = answer.get("messages") or []
    if not messages:
        out.write("no messages\n")
    for m in messages:
        role = m.get("role")
        head = f"#{m.get('id')} {role}"
        if role == "tool":
            head += f" {m.get('name')} ({'ok' if m.get('success') else 'failed'})"
        content = str(m.get("content") or "")
        calls = m.get("tool_calls") or []
        if content:
            out.write(f"{head}: {content}\n")
        for call in calls:
            arguments = json.dumps(call.get("arguments", {}), ensure_ascii=False)
            out.write(f"{head}: calls {call.get('name')} {arguments}\n")
        if not content and not calls:
            out.write(f"{head}: (empty)\n")


def _print_stream(stream: ChatStream, as_json: bool, out: IO[str], notes: IO[str]) -> None:
    mid_line = False
    events = iter(stream)
    while True:
        try:
            event = next(events)
        except StopIteration:
            break
        except EtlworksError:
            if mid_line:  # end the partial answer before the error is reported
                out.write("\n")
            raise
        kind = event.get("type")
        if as_json:
            out.write(json.dumps(event, ensure_ascii=False) + "\n")
            out.flush()
            continue
        if kind == "token":
            content = str(event.get("content", ""))
            out.write(content)
            out.flush()
            if content:
                mid_line = not content.endswith("\n")
        elif kind in ("tool_start", "tool_end"):
            if mid_line and out.isatty():
                out.write("\n")
                out.flush()
                mid_line = False
            if kind == "tool_start":
                arguments = json.dumps(event.get("arguments", {}), ensure_ascii=False)
                notes.write(f"[tool {event.get('name')} {_one_line(arguments, 200)}]\n")
            else:
                outcome = "ok" if event.get("success") else "failed"
                line = f"[tool {event.get('name')} {outcome}, {event.get('duration_ms', '?')} ms"
                if not event.get("success"):
                    line += f": {_one_line(str(event.get('result', '')), 200)}"
                notes.write(line + "]\n")
            notes.flush()
        elif kind == "done" and mid_line:
            out.write("\n")


def _parse_tool_arguments(text: str, prog: str) -> JSONDict:
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise _UsageError(
            f"the tool arguments are not valid JSON: {exc}; give one JSON object, e.g. {prog} {_TOOL_EXAMPLE}"
        ) from None
    if not isinstance(value, dict):
        raise _UsageError(
            f"the tool arguments must be a JSON object, got {type(value).__name__}; "
            f"e.g. {prog} {_TOOL_EXAMPLE}"
        )
    return value


def _run(args: argparse.Namespace, prog: str, out: IO[str], notes: IO[str]) -> int:
    command = args.command
    as_json = bool(getattr(args, "json", False))
    tool_arguments = _parse_tool_arguments(args.arguments, prog) if command == "tool" else None
    agent = EtlworksAgent()
    with agent:
        if command == "tools":
            answer = agent.list_tools()
            if as_json:
                _print_json(answer, out)
            else:
                _print_tools(answer, out)
        elif command == "tool":
            answer = agent.execute_tool(args.name, tool_arguments)
            if as_json:
                _print_json(answer, out)
            else:
                result = answer.get("result")
                text = result if isinstance(result, str) else json.dumps(result, indent=2, ensure_ascii=False)
                out.write(text + ("" if text.endswith("\n") else "\n"))
            if answer.get("success") is False:
                notes.write(f"error: the tool '{args.name}' ran and failed (code {answer.get('code')})\n")
                return _EXIT_API
        elif command in ("chat", "session-chat"):
            options = {"system_prompt": args.system_prompt}
            if args.no_tools:
                options["include_tools"] = False
            if command == "chat":
                answer = agent.chat(args.message, **options)
            else:
                answer = agent.session_chat(args.session_id, args.message, **options)
            if as_json:
                _print_json(answer, out)
            else:
                text = str(answer.get("response", ""))
                out.write(text + ("" if text.endswith("\n") else "\n"))
        elif command in ("chat-stream", "session-chat-stream"):
            options = {"system_prompt": args.system_prompt}
            if args.no_tools:
                options["include_tools"] = False
            if command == "chat-stream":
                stream = agent.chat_stream(args.message, **options)
            else:
                stream = agent.session_chat_stream(args.session_id, args.message, **options)
            with stream:
                _print_stream(stream, as_json, out, notes)
        elif command == "session-create":
            if as_json:
                # create_session returns only the id; show the whole answer here.
                answer = agent._json(
                    "POST",
                    "/sessions",
                    body={
                        k: v
                        for k, v in (("title", args.title), ("system_prompt", args.system_prompt))
                        if v is not None
                    },
                    idempotent=False,
                )
                _print_json(answer, out)
            else:
                out.write(agent.create_session(title=args.title, system_prompt=args.system_prompt) + "\n")
        elif command == "session-messages":
            answer = agent.session_messages(args.session_id, limit=args.limit, offset=args.offset)
            if as_json:
                _print_json(answer, out)
            else:
                _print_messages(answer, out)
        elif command == "session-list":
            answer = agent.list_sessions(limit=args.limit, offset=args.offset)
            if as_json:
                _print_json(answer, out)
            else:
                _print_sessions(answer, out)
        elif command == "session-delete":
            answer = agent.delete_session(args.session_id)
            if as_json:
                _print_json(answer, out)
            else:
                out.write(f"deleted session {args.session_id}\n")
        else:  # pragma: no cover - argparse only lets the commands above through
            raise _UsageError(f"unknown command {command!r}")
    return _EXIT_OK


def main(argv: Optional[List[str]] = None, *, prog: Optional[str] = None) -> int:
    """Runs the command-line tool and returns its exit code (0 ok, 1 API error, 2 usage error)."""
    if prog is None:
        prog = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else "etlworks_agent"
        if prog in ("__main__.py", "-c", ""):
            prog = "python -m etlworks_agent"
    parser = _build_parser(prog)
    args = parser.parse_args(argv)  # exits 2 with the usage on a bad command line
    out, notes = sys.stdout, sys.stderr
    as_json = bool(getattr(args, "json", False))
    try:
        return _run(args, prog, out, notes)
    except (_UsageError, ConfigurationError) as exc:
        notes.write(f"error: {exc}\n")
        return _EXIT_USAGE
    except APIError as exc:
        if as_json:
            body: JSONDict = (
                dict(exc.body) if exc.body else {"success": False, "error": exc.message, "code": exc.code}
            )
            body.setdefault("status", exc.status)
            body.setdefault("request_id", exc.request_id)
            if args.command.endswith("-stream"):
                out.write(json.dumps(body, ensure_ascii=False) + "\n")  # one line, like the events
            else:
                _print_json(body, out)
        notes.write(f"error: {exc}\n")
        return _EXIT_API
    except APIConnectionError as exc:
        notes.write(f"error: {exc}\n")
        return _EXIT_API
    except KeyboardInterrupt:
        notes.write("\ninterrupted\n")
        return 130
    except BrokenPipeError:
        # The reader went away (e.g. `| head`); say nothing more.
        try:  # keep Python from complaining again when it flushes stdout at exit
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        except (OSError, ValueError):
            pass
        return _EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
