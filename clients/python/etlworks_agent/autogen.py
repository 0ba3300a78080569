"""AutoGen (``autogen-agentchat`` 0.4+) function tools for the etlworks-agent server: the whole
agent as one ``FunctionTool``, and one ``FunctionTool`` per server tool.

Needs ``autogen-agentchat`` and ``autogen-core`` (``pip install 'etlworks-agent[autogen]'``)::

    from autogen_agentchat.agents import AssistantAgent
    from etlworks_agent import EtlworksAgent
    from etlworks_agent.autogen import EtlworksAgentTool, etlworks_tools

    client = EtlworksAgent()  # ETLWORKS_URL and ETLWORKS_API_KEY from the environment
    engineer = AssistantAgent(
        "engineer",
        model_client=model_client,  # any autogen-ext model client
        tools=[EtlworksAgentTool(client), *etlworks_tools(client, read_only=True)],
    )

The tools are synchronous functions that AutoGen runs in a thread, so the event loop stays free.
A failure (arguments that do not fit, an unknown session, a tool the key may not use, a server
tool that ran and failed, the server down) raises; ``AssistantAgent`` hands its message to the
model as an error result (``is_error``).
"""

import inspect
from typing import Annotated, Any, Dict, List, Optional, Sequence

from etlworks_agent._adapters import missing_framework

try:
    import autogen_agentchat  # noqa: F401 - the framework the tools are for
    from autogen_core.tools import FunctionTool
except ImportError as _exc:  # pragma: no cover - tested in a subprocess without AutoGen
    raise missing_framework("autogen", "AutoGen", "autogen-agentchat autogen-core", _exc) from _exc

from etlworks_agent import APIError, EtlworksAgent
from etlworks_agent._adapters import (
    ASSISTANT_DESCRIPTION,
    ASSISTANT_NAME,
    MESSAGE_DESCRIPTION,
    SESSION_DESCRIPTION,
    Delegation,
    ServerTool,
    answer_text,
    client_or_default,
    python_type,
    run_server_tool,
    server_tools,
)

__all__ = ["EtlworksAgentTool", "etlworks_tools"]


class EtlworksAgentTool(FunctionTool):
    """The whole Etlworks agent as one AutoGen ``FunctionTool`` (``etlworks_assistant``).

    Args:
        client: the :class:`~etlworks_agent.EtlworksAgent` to use (default: one configured from
            ``ETLWORKS_URL`` and ``ETLWORKS_API_KEY``).
        session_id: a server session to continue (default: one is created on first use).
        keep_session: keep one session across calls (default). With ``False`` a call without
            ``session_id`` is a one-shot chat without memory.
        session_title: the title of the session the tool creates.
        name: the tool's name (default ``etlworks_assistant``).
        description: what the model is told the tool does.

    The current session's id is :attr:`session_id`.
    """

    def __init__(
        self,
        client: Optional[EtlworksAgent] = None,
        *,
        session_id: Optional[str] = None,
        keep_session: bool = True,
        session_title: Optional[str] = "AutoGen delegation",
        name: str = ASSISTANT_NAME,
        description: str = ASSISTANT_DESCRIPTION,
    ) -> None:
        delegation = Delegation(
            client_or_default(client),
            session_id=session_id,
            keep_session=keep_session,
            session_title=session_title,
        )
        self._delegation = delegation

        def etlworks_assistant(
            message: Annotated[str, MESSAGE_DESCRIPTION],
            session_id: Annotated[Optional[str], SESSION_DESCRIPTION] = None,
        ) -> str:
            return answer_text(delegation.ask(message, session_id))

        super().__init__(etlworks_assistant, description=description, name=name)

    @property
    def session_id(self) -> Optional[str]:
        """The server session this tool continues (``None`` until the first call creates one)."""
        return self._delegation.session_id

    @property
    def client(self) -> EtlworksAgent:
        """The client the tool calls the server with."""
        return self._delegation.client


def _server_function(client: EtlworksAgent, tool: ServerTool) -> Any:
    """A function with the tool's parameters as its signature (what ``FunctionTool`` reads)."""

    def call(**kwargs: Any) -> str:
        text, answer = run_server_tool(client, tool.name, kwargs)
        if answer.get("success") is False:
            raise APIError(
                text,
                status=200,
                code=str(answer.get("code") or "tool_failed"),
                request_id=None,
                body=answer,
            )
        return text

    properties = tool.parameters.get("properties") or {}
    required = set(tool.parameters.get("required") or [])
    parameters = []
    annotations: Dict[str, Any] = {}
    for name, schema in properties.items():
        schema = schema if isinstance(schema, dict) else {}
        description = str(schema.get("description") or name)
        kind = python_type(schema)
        if name in required:
            annotation: Any = Annotated[kind, description]
            default: Any = inspect.Parameter.empty
        else:
            annotation = Annotated[Optional[kind], description]
            default = None
        parameters.append(
            inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=annotation)
        )
        annotations[name] = annotation
    call.__signature__ = inspect.Signature(parameters, return_annotation=str)  # type: ignore[attr-defined]
    call.__annotations__ = {**annotations, "return": str}
    call.__name__ = tool.name
    call.__qualname__ = tool.name
    call.__doc__ = tool.description
    return call


def etlworks_tools(
    client: Optional[EtlworksAgent] = None,
    tools: Optional[Sequence[str]] = None,
    *,
    read_only: bool = False,
) -> List[FunctionTool]:
    """One AutoGen ``FunctionTool`` per tool of the server (``GET /tools``), in the server's order,
    with the server's name, description and parameters.

    Args:
        client: the :class:`~etlworks_agent.EtlworksAgent` to use (default: one configured from
            ``ETLWORKS_URL`` and ``ETLWORKS_API_KEY``).
        tools: only these tools, by name (default: all).
        read_only: only the tools that change nothing (leaves out ``host_cli`` and
            ``import_template``).

    Raises:
        ValueError: ``tools`` names a tool the server does not have.
    """
    client = client_or_default(client)
    return [
        FunctionTool(_server_function(client, tool), description=tool.description, name=tool.name)
        for tool in server_tools(client, tools, read_only=read_only)
    ]
