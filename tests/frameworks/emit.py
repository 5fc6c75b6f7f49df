"""One agent run with a real LLM client and its real instrumentation, exported over OTLP/HTTP.

Run by the framework tests with the Python of a throwaway venv holding the framework's
packages (not the project's): ``python emit.py SCENARIO LLM_URL OTLP_URL``. The agent
asks the (fake) LLM, runs the tool it asks for, and asks again; the application's own
agent and tool spans follow the convention the instrumentation speaks, as an application
using it would write them. Exits non-zero if the exporter did not deliver.
"""

# mypy: ignore-errors
# (this file runs in the frameworks' venv; their packages are not in the project's)

from __future__ import annotations

import json
import sys
from collections.abc import Callable

from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

TOOL = {"type": "function", "function": {
    "name": "lookup_order", "description": "Where an order is.",
    "parameters": {"type": "object", "properties": {"order_id": {"type": "string"}},
                   "required": ["order_id"]}}}  # fmt: skip
QUESTION = "Where is order 42? My card is 4111 1111 1111 1111."


def lookup_order(order_id: str) -> str:
    return f"order {order_id} shipped to jane@example.com"


def genai_agent(tracer, scenario: str):
    return tracer.start_as_current_span(
        f"invoke_agent {scenario}",
        attributes={"gen_ai.operation.name": "invoke_agent", "gen_ai.provider.name": "openai",
                    "gen_ai.agent.name": scenario, "gen_ai.conversation.id": f"conv-{scenario}"},
    )  # fmt: skip


def genai_tool(tracer, name: str):
    return tracer.start_as_current_span(
        f"execute_tool {name}",
        attributes={"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": name,
                    "gen_ai.provider.name": "openai"},
    )  # fmt: skip


def openai_turns(llm: str, tool_span: Callable) -> None:
    from openai import OpenAI

    client = OpenAI(base_url=f"{llm}/v1", api_key="not-a-key", max_retries=0)
    messages = [{"role": "user", "content": QUESTION}]
    first = client.chat.completions.create(model="gpt-4o-mini", messages=messages, tools=[TOOL])
    call = first.choices[0].message.tool_calls[0]
    with tool_span(call.function.name):
        result = lookup_order(**json.loads(call.function.arguments))
    messages += [first.choices[0].message.model_dump(exclude_none=True),
                 {"role": "tool", "tool_call_id": call.id, "content": result}]  # fmt: skip
    client.chat.completions.create(model="gpt-4o-mini", messages=messages, tools=[TOOL])


def openai_v2(provider, tracer, llm: str) -> None:
    from opentelemetry.instrumentation.openai_v2 import OpenAIInstrumentor

    OpenAIInstrumentor().instrument(tracer_provider=provider)
    with genai_agent(tracer, "openai-v2"):
        openai_turns(llm, lambda name: genai_tool(tracer, name))


def openllmetry_openai(provider, tracer, llm: str) -> None:
    from opentelemetry.instrumentation.openai import OpenAIInstrumentor

    OpenAIInstrumentor().instrument(tracer_provider=provider)
    with genai_agent(tracer, "openllmetry-openai"):
        openai_turns(llm, lambda name: genai_tool(tracer, name))


def openinference_openai(provider, tracer, llm: str) -> None:
    from openinference.instrumentation.openai import OpenAIInstrumentor

    OpenAIInstrumentor().instrument(tracer_provider=provider)
    with tracer.start_as_current_span(
        "openinference-openai",
        attributes={"openinference.span.kind": "AGENT", "session.id": "conv-openinference-openai"},
    ):
        openai_turns(
            llm,
            lambda name: tracer.start_as_current_span(
                name, attributes={"openinference.span.kind": "TOOL", "tool.name": name}
            ),
        )


def openllmetry_anthropic(provider, tracer, llm: str) -> None:
    from anthropic import Anthropic
    from opentelemetry.instrumentation.anthropic import AnthropicInstrumentor

    AnthropicInstrumentor().instrument(tracer_provider=provider)
    client = Anthropic(base_url=llm, api_key="not-a-key", max_retries=0)
    tool = {"name": "lookup_order", "description": "Where an order is.",
            "input_schema": TOOL["function"]["parameters"]}  # fmt: skip
    messages = [{"role": "user", "content": QUESTION}]
    with genai_agent(tracer, "openllmetry-anthropic"):
        first = client.messages.create(
            model="claude-sonnet-4-5", max_tokens=200, messages=messages, tools=[tool]
        )
        use = next(c for c in first.content if c.type == "tool_use")
        with genai_tool(tracer, use.name):
            result = lookup_order(**use.input)
        messages += [
            {"role": "assistant", "content": [c.model_dump() for c in first.content]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": use.id, "content": result}]},
        ]  # fmt: skip
        client.messages.create(
            model="claude-sonnet-4-5", max_tokens=200, messages=messages, tools=[tool]
        )


def openinference_openai_agents(provider, tracer, llm: str) -> None:
    from agents import (
        Agent,
        Runner,
        function_tool,
        set_default_openai_api,
        set_default_openai_client,
        set_trace_processors,
    )
    from openai import AsyncOpenAI
    from openinference.instrumentation.openai_agents import OpenAIAgentsInstrumentor

    set_trace_processors([])  # no export to OpenAI's own trace backend
    OpenAIAgentsInstrumentor().instrument(tracer_provider=provider)
    client = AsyncOpenAI(base_url=f"{llm}/v1", api_key="not-a-key", max_retries=0)
    set_default_openai_client(client, use_for_tracing=False)
    set_default_openai_api("chat_completions")
    agent = Agent(
        name="orders-agent",
        instructions="Answer questions about orders.",
        tools=[function_tool(lookup_order)],
        model="gpt-4o-mini",
    )
    Runner.run_sync(agent, QUESTION)


SCENARIOS = {f.__name__.replace("_", "-"): f for f in (
    openai_v2, openllmetry_openai, openinference_openai, openllmetry_anthropic,
    openinference_openai_agents)}  # fmt: skip


def main() -> int:
    scenario, llm, otlp = sys.argv[1:4]
    provider = TracerProvider(
        resource=Resource.create(
            {"service.name": f"svc-{scenario}", "deployment.environment.name": "test"}
        )
    )
    exported = []

    class Recording(OTLPSpanExporter):
        def export(self, spans):
            result = super().export(spans)
            exported.append(result.name)
            return result

    provider.add_span_processor(BatchSpanProcessor(Recording(endpoint=otlp, timeout=10)))
    SCENARIOS[scenario](provider, provider.get_tracer("orders-app"), llm)
    provider.shutdown()
    print(json.dumps({"exports": exported}))
    return 0 if exported and set(exported) == {"SUCCESS"} else 1


if __name__ == "__main__":
    raise SystemExit(main())
