"""What the LangChain, CrewAI and AutoGen adapters share: the assistant tool's session keeping,
the server tool catalogue, answers as text for a model, and JSON Schema to pydantic models.

Only the adapter modules import this one, after their framework imported, so ``pydantic`` (which
all three frameworks depend on) is there. The core client (``etlworks_agent/__init__.py``) never
imports it: the core stays a single file that needs only ``requests``.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Type

from pydantic import BaseModel, ConfigDict, Field, create_model

from etlworks_agent import (
    APIError,
    BadRequestError,
    EtlworksAgent,
    NotFoundError,
    PermissionDeniedError,
)

JSONDict = Dict[str, Any]

#: The name the whole agent goes by as a tool, the same as the server's MCP tool.
ASSISTANT_NAME = "etlworks_assistant"

ASSISTANT_DESCRIPTION = (
    "Delegates data-integration work to the Etlworks agent, which has its own tools: it creates "
    "connections (REST APIs, CSV/JSON files, SQLite, PostgreSQL, MySQL), builds, runs and "
    "schedules flows that move data between them, imports flow templates, diagnoses failed runs "
    "and answers how-to questions from its documentation. Send one plain-language request per "
    "call, e.g. 'create a connection to api.example.com' or 'why did flow orders fail?'. It "
    "remembers the conversation, so a follow-up such as 'schedule it every hour' acts on what it "
    "did before. Each answer ends with its session_id; pass it back to continue that conversation."
)

MESSAGE_DESCRIPTION = "The request or question for the Etlworks agent, in plain language."

SESSION_DESCRIPTION = (
    "The session_id of an earlier answer, to continue that conversation. Leave it out (or null) "
    "to go on with this tool's current conversation (one is started on first use)."
)

#: Failures the calling model can act on (wrong arguments, an unknown tool or session, a tool
#: its key may not use): the adapters hand these back to the model as the tool's answer.
MODEL_FIXABLE_ERRORS: Tuple[Type[APIError], ...] = (BadRequestError, NotFoundError, PermissionDeniedError)


def missing_framework(module: str, framework: str, packages: str, exc: ImportError) -> ImportError:
    """The ImportError an adapter module raises when its framework is not installed."""
    error = ImportError(
        f"etlworks_agent.{module} needs {framework}, which is not installed ({exc}); install it "
        f"with: pip install 'etlworks-agent[{module}]' (or: pip install {packages})"
    )
    error.name = exc.name
    return error


def client_or_default(client: Optional[EtlworksAgent]) -> EtlworksAgent:
    """The given client, or one configured from ETLWORKS_URL and ETLWORKS_API_KEY."""
    if client is None:
        return EtlworksAgent()
    if not isinstance(client, EtlworksAgent):
        raise TypeError(f"client must be an etlworks_agent.EtlworksAgent, got {type(client).__name__}")
    return client


class Delegation:
    """Runs messages through the whole agent, keeping one server session across calls.

    The first call without a ``session_id`` creates a session (titled ``session_title``) and
    later calls reuse it, so a multi-step delegation keeps its context: "create a connection to
    api.example.com", then "schedule it every hour". A call that names a ``session_id`` uses
    that session and, once it answered, makes it the current one. With ``keep_session=False``
    and no id, each call is a one-shot ``/chat`` without memory.
    """

    def __init__(
        self,
        client: EtlworksAgent,
        *,
        session_id: Optional[str] = None,
        keep_session: bool = True,
        session_title: Optional[str] = None,
    ) -> None:
        if session_id is not None and (not isinstance(session_id, str) or not session_id.strip()):
            raise ValueError(f"session_id must be a session id such as 'ses_...', got {session_id!r}")
        self.client = client
        self.session_id = session_id.strip() if session_id else None
        self.keep_session = keep_session
        self.session_title = session_title
        self._lock = threading.Lock()

    def ask(self, message: str, session_id: Optional[str] = None) -> JSONDict:
        """Sends ``message`` through the agent and returns the API's answer (with ``session_id``)."""
        if not isinstance(message, str) or not message.strip():
            raise BadRequestError(
                "message must be a non-empty request for the agent, e.g. 'list connections'",
                code="invalid_arguments",
            )
        explicit = session_id.strip() if isinstance(session_id, str) and session_id.strip() else None
        with self._lock:
            # One lock around the first call's session creation, so parallel first calls share it.
            current = explicit or self.session_id
            if current is None and self.keep_session:
                current = self.session_id = self.client.create_session(title=self.session_title)
        if current is None:
            return self.client.chat(message)
        try:
            answer = self.client.session_chat(current, message)
        except NotFoundError as exc:
            if exc.code != "session_not_found":
                raise
            with self._lock:
                if self.session_id == current:
                    self.session_id = None
            exc.message = (
                f"{exc.message}; the session may have been deleted or belong to another key's "
                "tenant. Call again without session_id to start a new conversation."
            )
            raise
        if explicit is not None and self.keep_session:
            # A session the caller named becomes the current one once it answered.
            with self._lock:
                self.session_id = explicit
        return answer


def answer_text(answer: Mapping[str, Any]) -> str:
    """The agent's answer as the text a calling model reads: the response, then its session_id
    and the tools the agent used."""
    text = str(answer.get("response") or "").strip() or "(the agent gave no text)"
    lines = [text, ""]
    session_id = answer.get("session_id")
    if isinstance(session_id, str) and session_id:
        lines.append(f"session_id: {session_id} (pass it as session_id to continue this conversation)")
    used = [str(name) for name in answer.get("tools_used") or []]
    if used:
        lines.append("tools used: " + ", ".join(dict.fromkeys(used)))
    return "\n".join(lines).rstrip()


@dataclass(frozen=True)
class ServerTool:
    """One tool of the server's catalogue (``GET /tools``)."""

    name: str
    description: str
    parameters: JSONDict
    agentic: bool


def server_tools(
    client: EtlworksAgent, names: Optional[Sequence[str]] = None, *, read_only: bool = False
) -> List[ServerTool]:
    """The server's tools, in its order; only ``names`` when given, only the non-agentic (read-only)
    ones with ``read_only``.

    Raises:
        ValueError: a name in ``names`` is not one of the server's tools.
    """
    catalogue = client.list_tools().get("tools") or []
    tools = [
        ServerTool(
            name=str(item["name"]),
            description=str(item.get("description") or item["name"]),
            parameters=dict(item.get("parameters") or {"type": "object", "properties": {}}),
            agentic=bool(item.get("agentic")),
        )
        for item in catalogue
        if isinstance(item, dict) and isinstance(item.get("name"), str)
    ]
    if names is not None:
        if isinstance(names, str):
            raise TypeError(f"tools must be a list of tool names, got the string {names!r}")
        known = {tool.name for tool in tools}
        unknown = [name for name in names if name not in known]
        if unknown:
            raise ValueError(
                f"unknown tool {', '.join(repr(n) for n in unknown)}; the server offers "
                f"{', '.join(sorted(known))}"
            )
        wanted = set(names)
        tools = [tool for tool in tools if tool.name in wanted]
    if read_only:
        tools = [tool for tool in tools if not tool.agentic]
    return tools


def run_server_tool(client: EtlworksAgent, name: str, args: Mapping[str, Any]) -> Tuple[str, JSONDict]:
    """Runs one server tool; returns (the text for the model, the API's whole answer).

    Arguments left out or ``None`` are not sent (the server applies its defaults). A tool that
    ran and failed is an answer, not an exception: its text starts with ``The tool failed:``.
    """
    sent = {key: value for key, value in args.items() if value is not None}
    answer = client.execute_tool(name, sent)
    result = answer.get("result")
    text = result if isinstance(result, str) and result else json.dumps(answer.get("data"), default=str)
    if answer.get("success") is False:
        text = f"The tool failed: {text}"
    return text, answer


_JSON_TYPES: Dict[str, Any] = {
    "string": str,
    "integer": int,
    "number": float,
    "boolean": bool,
    "object": Dict[str, Any],
    "array": List[Any],
}


def python_type(schema: Mapping[str, Any]) -> Any:
    """The Python type for one JSON Schema property (``Any`` for what it cannot tell)."""
    kind = schema.get("type")
    if isinstance(kind, str):
        return _JSON_TYPES.get(kind, Any)
    return Any


def _constraints(schema: Mapping[str, Any]) -> JSONDict:
    keywords = {
        "minLength": "min_length",
        "maxLength": "max_length",
        "minimum": "ge",
        "maximum": "le",
        "exclusiveMinimum": "gt",
        "exclusiveMaximum": "lt",
    }
    return {name: schema[key] for key, name in keywords.items() if isinstance(schema.get(key), (int, float))}


def model_from_schema(model_name: str, schema: Mapping[str, Any]) -> Type[BaseModel]:
    """A pydantic model for a tool's JSON Schema (an object of simple properties, as the server's
    tools have): types, descriptions, required, length and range limits; unknown fields refused
    when the schema says ``additionalProperties: false``."""
    properties = schema.get("properties") or {}
    required = set(schema.get("required") or [])
    fields: Dict[str, Any] = {}
    for name, prop in properties.items():
        prop = prop if isinstance(prop, Mapping) else {}
        kind = python_type(prop)
        description = prop.get("description")
        if name in required:
            fields[name] = (kind, Field(..., description=description, **_constraints(prop)))
        else:
            fields[name] = (Optional[kind], Field(None, description=description, **_constraints(prop)))
    config = ConfigDict(extra="forbid" if schema.get("additionalProperties") is False else "ignore")
    model: Type[BaseModel] = create_model(model_name, __config__=config, **fields)
    return model


def class_name(tool_name: str, suffix: str) -> str:
    """``search_knowledge_base`` -> ``SearchKnowledgeBase<suffix>``."""
    return "".join(part.capitalize() for part in tool_name.replace("-", "_").split("_")) + suffix
