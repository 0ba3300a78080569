"""LangChain tools for the etlworks-agent server: the whole agent as one tool, and a toolkit with
one structured tool per server tool.

Needs ``langchain-core`` (``pip install 'etlworks-agent[langchain]'``)::

    from etlworks_agent import EtlworksAgent
    from etlworks_agent.langchain import EtlworksAgentTool, EtlworksToolkit

    client = EtlworksAgent()  # ETLWORKS_URL and ETLWORKS_API_KEY from the environment
    assistant = EtlworksAgentTool(client=client)
    print(assistant.invoke({"message": "create a connection to api.example.com"}))
    print(assistant.invoke({"message": "schedule it every hour"}))  # same session
    tools = EtlworksToolkit(client=client).get_tools()  # host_cli, search_knowledge_base, ...

Both return ``content_and_artifact``: the model reads the text, and a ``ToolMessage`` made from
a tool call carries the API's whole JSON answer as its ``artifact``. A server tool that ran and
failed, and failures the model can fix (bad arguments, an unknown session, a tool the key may not
use), come back as an error ``ToolMessage`` (``status="error"``, via ``handle_tool_error``) whose
text says what went wrong; others (server down, usage cap) raise.
"""

from __future__ import annotations

from typing import Any, List, Literal, Optional, Tuple

from etlworks_agent._adapters import missing_framework

try:
    from langchain_core.callbacks import CallbackManagerForToolRun
    from langchain_core.tools import BaseTool, BaseToolkit, StructuredTool, ToolException
    from langchain_core.tools.base import ArgsSchema
    from pydantic import BaseModel, ConfigDict, Field, PrivateAttr
except ImportError as _exc:  # pragma: no cover - tested in a subprocess without LangChain
    raise missing_framework("langchain", "LangChain", "langchain-core", _exc) from _exc

from etlworks_agent import EtlworksAgent
from etlworks_agent._adapters import (
    ASSISTANT_DESCRIPTION,
    ASSISTANT_NAME,
    MESSAGE_DESCRIPTION,
    MODEL_FIXABLE_ERRORS,
    SESSION_DESCRIPTION,
    Delegation,
    JSONDict,
    answer_text,
    client_or_default,
    run_server_tool,
    server_tools,
)

__all__ = ["EtlworksAgentInput", "EtlworksAgentTool", "EtlworksToolkit"]


class EtlworksAgentInput(BaseModel):
    """The assistant tool's arguments."""

    message: str = Field(description=MESSAGE_DESCRIPTION, min_length=1)
    session_id: Optional[str] = Field(default=None, description=SESSION_DESCRIPTION)


class EtlworksAgentTool(BaseTool):
    """The whole Etlworks agent as one LangChain tool (``etlworks_assistant``).

    Args:
        client: the :class:`~etlworks_agent.EtlworksAgent` to use (default: one configured from
            ``ETLWORKS_URL`` and ``ETLWORKS_API_KEY``).
        session_id: a server session to continue (default: one is created on first use).
        keep_session: keep one session across calls (default). With ``False`` a call without
            ``session_id`` is a one-shot chat without memory.
        session_title: the title of the session the tool creates.

    Any other keyword (``name``, ``description``, ``return_direct``, ...) goes to ``BaseTool``.
    The current session's id is :attr:`session_id`.
    """

    name: str = ASSISTANT_NAME
    description: str = ASSISTANT_DESCRIPTION
    args_schema: ArgsSchema = EtlworksAgentInput
    response_format: Literal["content", "content_and_artifact"] = "content_and_artifact"
    handle_tool_error: Any = True

    _delegation: Delegation = PrivateAttr()

    def __init__(
        self,
        client: Optional[EtlworksAgent] = None,
        *,
        session_id: Optional[str] = None,
        keep_session: bool = True,
        session_title: Optional[str] = "LangChain delegation",
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

    def _run(
        self,
        message: str,
        session_id: Optional[str] = None,
        run_manager: Optional[CallbackManagerForToolRun] = None,
    ) -> Tuple[str, JSONDict]:
        try:
            answer = self._delegation.ask(message, session_id)
        except MODEL_FIXABLE_ERRORS as exc:
            raise ToolException(str(exc)) from exc
        return answer_text(answer), answer


def _server_tool_function(client: EtlworksAgent, tool_name: str) -> Any:
    def call(**kwargs: Any) -> Tuple[str, JSONDict]:
        try:
            text, answer = run_server_tool(client, tool_name, kwargs)
        except MODEL_FIXABLE_ERRORS as exc:
            raise ToolException(str(exc)) from exc
        if answer.get("success") is False:
            raise ToolException(text)
        return text, answer

    call.__name__ = tool_name
    return call


class EtlworksToolkit(BaseToolkit):
    """One LangChain ``StructuredTool`` per tool of the server (``GET /tools``), each with the
    server's name, description and JSON Schema (as its ``args_schema``).

    Args:
        client: the :class:`~etlworks_agent.EtlworksAgent` to use (default: one configured from
            ``ETLWORKS_URL`` and ``ETLWORKS_API_KEY``).
        tools: only these tools, by name (default: all).
        read_only: only the tools that change nothing (leaves out ``host_cli`` and
            ``import_template``).
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    client: Optional[EtlworksAgent] = None
    tools: Optional[List[str]] = None
    read_only: bool = False

    def get_tools(self) -> List[BaseTool]:
        """The tools, built from the server's catalogue each time this is called.

        Raises:
            ValueError: ``tools`` names a tool the server does not have.
        """
        client = client_or_default(self.client)
        built: List[BaseTool] = []
        for tool in server_tools(client, self.tools, read_only=self.read_only):
            built.append(
                StructuredTool(
                    name=tool.name,
                    description=tool.description,
                    args_schema=tool.parameters,
                    func=_server_tool_function(client, tool.name),
                    response_format="content_and_artifact",
                    handle_tool_error=True,
                    metadata={"agentic": tool.agentic},
                )
            )
        return built
