"""CrewAI tools for the etlworks-agent server: the whole agent as one tool, and one tool per
server tool, all ``crewai.tools.BaseTool`` subclasses.

Needs ``crewai`` (``pip install 'etlworks-agent[crewai]'``)::

    from crewai import Agent
    from etlworks_agent import EtlworksAgent
    from etlworks_agent.crewai import EtlworksAgentTool, etlworks_tools

    client = EtlworksAgent()  # ETLWORKS_URL and ETLWORKS_API_KEY from the environment
    engineer = Agent(
        role="Data engineer",
        goal="Get the data where it is needed",
        backstory="Delegates integration work to the Etlworks agent.",
        tools=[EtlworksAgentTool(client=client), *etlworks_tools(client, read_only=True)],
    )

A failure the calling model can act on (arguments that do not fit, an unknown session, a tool the
key may not use) and a server tool that ran and failed come back as a ``ToolFailure``: the model
reads its message and the crew records the failure. Others (server down, usage cap) raise.
"""

from __future__ import annotations

from typing import Any, List, Optional, Sequence, Type, Union

from etlworks_agent._adapters import missing_framework

try:
    from crewai.tools import BaseTool
    from crewai.tools.tool_failure import ToolFailure
    from pydantic import BaseModel, Field, PrivateAttr
except ImportError as _exc:  # pragma: no cover - tested in a subprocess without CrewAI
    raise missing_framework("crewai", "CrewAI", "crewai", _exc) from _exc

from etlworks_agent import APIError, EtlworksAgent
from etlworks_agent._adapters import (
    ASSISTANT_DESCRIPTION,
    ASSISTANT_NAME,
    MESSAGE_DESCRIPTION,
    MODEL_FIXABLE_ERRORS,
    SESSION_DESCRIPTION,
    Delegation,
    answer_text,
    class_name,
    client_or_default,
    model_from_schema,
    run_server_tool,
    server_tools,
)

__all__ = ["EtlworksAgentInput", "EtlworksAgentTool", "EtlworksServerTool", "etlworks_tools"]


def _failure(exc: APIError) -> ToolFailure:
    return ToolFailure(message=exc.message, code=exc.code)


class EtlworksAgentInput(BaseModel):
    """The assistant tool's arguments."""

    message: str = Field(description=MESSAGE_DESCRIPTION, min_length=1)
    session_id: Optional[str] = Field(default=None, description=SESSION_DESCRIPTION)


class EtlworksAgentTool(BaseTool):
    """The whole Etlworks agent as one CrewAI tool (``etlworks_assistant``).

    Args:
        client: the :class:`~etlworks_agent.EtlworksAgent` to use (default: one configured from
            ``ETLWORKS_URL`` and ``ETLWORKS_API_KEY``).
        session_id: a server session to continue (default: one is created on first use).
        keep_session: keep one session across calls (default). With ``False`` a call without
            ``session_id`` is a one-shot chat without memory.
        session_title: the title of the session the tool creates.

    Any other keyword (``name``, ``description``, ``result_as_answer``, ...) goes to
    ``BaseTool``. The current session's id is :attr:`session_id`.
    """

    name: str = ASSISTANT_NAME
    description: str = ASSISTANT_DESCRIPTION
    args_schema: Type[BaseModel] = EtlworksAgentInput

    _delegation: Delegation = PrivateAttr()

    def __init__(
        self,
        client: Optional[EtlworksAgent] = None,
        *,
        session_id: Optional[str] = None,
        keep_session: bool = True,
        session_title: Optional[str] = "CrewAI delegation",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self._delegation = Delegation(
            client_or_default(client),
            session_id=session_id,
            keep_session=keep_session,
            session_title=session_title,
        )

    @property
    def session_id(self) -> Optional[str]:
        """The server session this tool continues (``None`` until the first call creates one)."""
        return self._delegation.session_id

    @property
    def client(self) -> EtlworksAgent:
        """The client the tool calls the server with."""
        return self._delegation.client

    def _run(self, message: str, session_id: Optional[str] = None) -> Union[str, ToolFailure]:
        try:
            return answer_text(self._delegation.ask(message, session_id))
        except MODEL_FIXABLE_ERRORS as exc:
            return _failure(exc)


class EtlworksServerTool(BaseTool):
    """One tool of the server as a CrewAI tool; build them with :func:`etlworks_tools`.

    Its ``name``, ``description`` and ``args_schema`` (a pydantic model made from the tool's JSON
    Schema) are the server's. ``agentic`` is true for the tools that change state.
    """

    agentic: bool = False

    _client: EtlworksAgent = PrivateAttr()

    def __init__(self, client: EtlworksAgent, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._client = client

    def _run(self, **kwargs: Any) -> Union[str, ToolFailure]:
        try:
            text, answer = run_server_tool(self._client, self.name, kwargs)
        except MODEL_FIXABLE_ERRORS as exc:
            return _failure(exc)
        if answer.get("success") is False:
            return ToolFailure(message=text, code=str(answer.get("code") or "tool_failed"))
        return text


def etlworks_tools(
    client: Optional[EtlworksAgent] = None,
    tools: Optional[Sequence[str]] = None,
    *,
    read_only: bool = False,
) -> List[EtlworksServerTool]:
    """One CrewAI tool per tool of the server (``GET /tools``), in the server's order.

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
        EtlworksServerTool(
            client,
            name=tool.name,
            description=tool.description,
            args_schema=model_from_schema(class_name(tool.name, "Args"), tool.parameters),
            agentic=tool.agentic,
        )
        for tool in server_tools(client, tools, read_only=read_only)
    ]
