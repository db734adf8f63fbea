"""The gateway through the other clients users point at it: litellm (``completion`` and its ``Router``)
and langchain-openai (``invoke``, ``stream``, ``bind_tools``, ``with_structured_output``), against a
gateway whose pool is a loopback upstream that serves tools, passed through and routed."""

from __future__ import annotations

import os

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # litellm would fetch its price list online

import litellm  # noqa: E402
import pytest  # noqa: E402
from langchain_core.tools import tool  # noqa: E402
from langchain_openai import ChatOpenAI  # noqa: E402
from pydantic import BaseModel  # noqa: E402

from support.gateway_helpers import NONE_TOOL, gateway, http_pool  # noqa: E402
from support.servers import running_server  # noqa: E402
from support.tools_upstream import create_tools_upstream  # noqa: E402

WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "Current weather for a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}
ASK = [{"role": "user", "content": "What is the weather in Paris?"}]


class Pet(BaseModel):
    name: str
    age: int


@tool
def get_weather(city: str) -> str:
    """Current weather for a city."""
    return "sunny"


@pytest.fixture(scope="module")
def gw():
    app = create_tools_upstream()
    app.state.gate.set()  # its streams go on without waiting for the client (the live test is elsewhere)
    with running_server(app) as url:
        with gateway(http_pool(url, ["toolbox"], tools=[NONE_TOOL])) as gateway_url:
            yield gateway_url


@pytest.mark.parametrize("model", ["toolbox", "atlas"])
def test_litellm_completion_tools_and_stream(gw, model):
    target = dict(model=f"openai/{model}", api_base=f"{gw}/v1", api_key="k", num_retries=0)
    resp = litellm.completion(messages=ASK, tools=[WEATHER], **target)
    call = resp.choices[0].message.tool_calls[0]
    assert call.id == "call_up_1" and call.function.name == "get_weather"
    text = "".join(ch.choices[0].delta.content or "" for ch in litellm.completion(messages=ASK, stream=True, **target)
                   if ch.choices)
    assert text == "roles=system,user; last=What is the weather in Paris?" if model == "atlas" else text.startswith("roles=user")
    with pytest.raises(litellm.BadRequestError):
        litellm.completion(messages=ASK, temperature=5, **target)


def test_litellm_router(gw):
    router = litellm.Router(model_list=[{"model_name": "gateway", "litellm_params": {
        "model": "openai/atlas", "api_base": f"{gw}/v1", "api_key": "k"}}], num_retries=0)
    resp = router.completion(model="gateway", messages=ASK, n=2)
    assert len(resp.choices) == 2 and resp.choices[1].message.content.endswith("Paris?")


@pytest.mark.parametrize("model", ["toolbox", "atlas"])
def test_langchain_invoke_stream_tools_and_structured_output(gw, model):
    llm = ChatOpenAI(model=model, base_url=f"{gw}/v1", api_key="k", max_retries=0)
    assert llm.invoke("hello").content.endswith("last=hello")
    assert "".join(chunk.content for chunk in llm.stream("hello")).endswith("last=hello")
    calls = llm.bind_tools([get_weather]).invoke("What is the weather in Paris?").tool_calls
    assert calls and calls[0]["name"] == "get_weather" and calls[0]["id"] == "call_up_1"
    pet = llm.with_structured_output(Pet).invoke("Our dog Rex is 3.")
    assert isinstance(pet, Pet) and pet.name.endswith("Rex is 3.")
