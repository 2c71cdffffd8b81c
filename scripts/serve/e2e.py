"""End-to-end tests of `gptoss serve --model tiny` with the real `openai` client.

Starts two servers on free loopback ports (one open, one with an API key and tiny limits),
runs every check, prints `N passed, M failed` and exits non-zero on any failure.
Usage: python scripts/serve/e2e.py   (needs `openai` and `jsonschema`; GPTOSS_BIN to pick
the binary).
"""

import concurrent.futures as cf
import json
import socket
import sys
import time
import traceback
import urllib.request

import jsonschema
import openai

from common import Server

RESULTS = []
TOOLS = [{"type": "function", "function": {
    "name": "get_weather", "description": "Weather of a city",
    "parameters": {"type": "object", "properties": {
        "city": {"type": "string", "maxLength": 40},
        "unit": {"type": "string", "enum": ["c", "f"]},
        "days": {"type": "integer", "minimum": 1, "maximum": 14}},
        "required": ["city", "unit", "days"], "additionalProperties": False},
    "strict": True}}]
SCHEMA = {"type": "object", "properties": {
    "name": {"type": "string", "maxLength": 30},
    "age": {"type": "integer", "minimum": 0, "maximum": 150},
    "tags": {"type": "array", "items": {"type": "string", "enum": ["a", "b"]}, "maxItems": 3}},
    "required": ["name", "age", "tags"], "additionalProperties": False}
MSG = [{"role": "user", "content": "What is the weather in Paris?"}]


def check(name):
    """Runs the decorated check at once and records its result."""
    def wrap(f):
        t = time.time()
        try:
            f()
            RESULTS.append((name, True))
            print(f"PASS {name} ({time.time() - t:.1f}s)", flush=True)
        except Exception:  # noqa: BLE001 - report every failure and go on
            RESULTS.append((name, False))
            print(f"FAIL {name}\n{traceback.format_exc()}", flush=True)
        return f
    return wrap


def raw(base, method, path, body=None, headers=None, data=None):
    """(status, headers, parsed body or text)."""
    if data is None and body is not None:
        data = json.dumps(body).encode()
    req = urllib.request.Request(base + path, data=data, method=method,
                                 headers={"Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=120) as r:
            status, hdrs, text = r.status, dict(r.headers), r.read().decode()
    except urllib.error.HTTPError as e:
        status, hdrs, text = e.code, dict(e.headers), e.read().decode()
    try:
        return status, hdrs, json.loads(text)
    except ValueError:
        return status, hdrs, text


def assert_error(status, body, want, param=None):
    assert status == want, (status, body)
    err = body["error"]
    for k in ("message", "type", "param", "code"):
        assert k in err, (k, body)
    if param is not None:
        assert err["param"] == param, body


def chat_stream_text(client, **kw):
    content, reasoning, calls, finish, usage = "", "", {}, None, None
    for ch in client.chat.completions.create(stream=True, stream_options={"include_usage": True}, **kw):
        if ch.usage:
            usage = ch.usage
        for c in ch.choices:
            d = c.delta
            content += d.content or ""
            reasoning += (d.model_extra or {}).get("reasoning_content") or ""
            for tc in d.tool_calls or []:
                slot = calls.setdefault(tc.index, {"name": "", "arguments": "", "id": None})
                if tc.id:
                    slot["id"] = tc.id
                if tc.function and tc.function.name:
                    slot["name"] = tc.function.name
                if tc.function and tc.function.arguments:
                    slot["arguments"] += tc.function.arguments
            finish = c.finish_reason or finish
    return content, reasoning, calls, finish, usage


def main():
    srv = Server()
    locked = Server("--api-key", "sekrit", "--max-seqs", "1", "--max-queue", "1", "--body-limit", "4096")
    client = openai.OpenAI(base_url=srv.base + "/v1", api_key="x", max_retries=0, timeout=120)
    try:
        run_all(srv, locked, client)
    finally:
        srv.stop()
        locked.stop()
    passed = sum(ok for _, ok in RESULTS)
    failed = len(RESULTS) - passed
    print(f"{passed} passed, {failed} failed")
    sys.exit(1 if failed else 0)


def run_all(srv, locked, client):
    @check("health and models")
    def _():
        s, _, b = raw(srv.base, "GET", "/health")
        assert s == 200 and b["status"] == "ok", b
        m = client.models.list()
        assert m.data[0].id == "gpt-oss"

    @check("chat: streamed text equals non-streamed (seeded sampling)")
    def _():
        kw = dict(model="gpt-oss", messages=MSG, max_tokens=24, seed=42, temperature=1.0)
        r = client.chat.completions.create(**kw)
        c, reasoning, _, finish, usage = chat_stream_text(client, **kw)
        msg = r.choices[0].message
        assert c == (msg.content or ""), (c, msg.content)
        assert reasoning == ((msg.model_extra or {}).get("reasoning_content") or "")
        assert finish == r.choices[0].finish_reason
        assert usage.completion_tokens == r.usage.completion_tokens == 24
        assert usage.prompt_tokens == r.usage.prompt_tokens
        assert r.usage.completion_tokens_details.reasoning_tokens <= 24
        for t in ("<|", "|>"):
            assert t not in c and t not in reasoning

    @check("chat: n=2 and logprobs")
    def _():
        r = client.chat.completions.create(model="m", messages=MSG, max_tokens=8, n=2, seed=3,
                                           reasoning_effort="none", logprobs=True, top_logprobs=2)
        assert len(r.choices) == 2 and r.usage.completion_tokens == 16
        lp = r.choices[0].logprobs.content
        assert lp and all(len(x.top_logprobs) == 2 for x in lp)

    @check("chat: reasoning_effort none gives no reasoning")
    def _():
        r = client.chat.completions.create(model="m", messages=MSG, max_tokens=12, temperature=0,
                                           reasoning_effort="none")
        assert not (r.choices[0].message.model_extra or {}).get("reasoning_content")
        assert r.usage.completion_tokens_details.reasoning_tokens == 0
        assert r.choices[0].message.content

    for stream in (False, True):
        for mode in ("none", "budget"):
            @check(f"chat: tool_choice required -> valid call (stream={stream}, reasoning={mode})")
            def _(stream=stream, mode=mode):
                kw = dict(model="m", messages=MSG, tools=TOOLS, tool_choice="required",
                          max_tokens=160, temperature=0.8, seed=7)
                if mode == "none":
                    kw["reasoning_effort"] = "none"
                else:
                    kw["extra_body"] = {"max_reasoning_tokens": 8}
                if stream:
                    _, _, calls, finish, _ = chat_stream_text(client, **kw)
                    call = calls[0]
                    assert call["id"]
                else:
                    r = client.chat.completions.create(**kw)
                    finish = r.choices[0].finish_reason
                    tc = r.choices[0].message.tool_calls[0]
                    call = {"name": tc.function.name, "arguments": tc.function.arguments}
                assert finish == "tool_calls", finish
                assert call["name"] == "get_weather"
                jsonschema.validate(json.loads(call["arguments"]), TOOLS[0]["function"]["parameters"])

        @check(f"chat: json_schema response_format validates (stream={stream})")
        def _(stream=stream):
            kw = dict(model="m", messages=[{"role": "user", "content": "a person"}], max_tokens=160,
                      temperature=0.7, seed=11, extra_body={"max_reasoning_tokens": 6},
                      response_format={"type": "json_schema", "json_schema": {
                          "name": "person", "schema": SCHEMA, "strict": True}})
            if stream:
                content, _, _, finish, _ = chat_stream_text(client, **kw)
            else:
                r = client.chat.completions.create(**kw)
                content, finish = r.choices[0].message.content, r.choices[0].finish_reason
            assert finish == "stop", finish
            jsonschema.validate(json.loads(content), SCHEMA)

    @check("chat: named tool_choice with a small max_tokens still answers")
    def _():
        r = client.chat.completions.create(
            model="m", messages=MSG, tools=TOOLS, max_tokens=120, temperature=1.0, seed=5,
            tool_choice={"type": "function", "function": {"name": "get_weather"}})
        tc = r.choices[0].message.tool_calls[0]
        jsonschema.validate(json.loads(tc.function.arguments), TOOLS[0]["function"]["parameters"])

    @check("responses: streamed equals non-streamed; previous_response_id; GET/DELETE")
    def _():
        kw = dict(model="m", input="Say hi", max_output_tokens=20, temperature=0,
                  reasoning={"effort": "low"})
        r = client.responses.create(**kw)
        assert r.status in ("completed", "incomplete")
        text = r.output_text
        streamed, types, done = "", [], None
        for ev in client.responses.create(stream=True, **kw):
            types.append(ev.type)
            if ev.type == "response.output_text.delta":
                streamed += ev.delta
            if ev.type in ("response.completed", "response.incomplete"):
                done = ev.response
        assert types[0] == "response.created" and types[-1] in ("response.completed", "response.incomplete")
        assert streamed == text, (streamed, text)
        assert done.usage.output_tokens == r.usage.output_tokens
        r2 = client.responses.create(model="m", input="and again", max_output_tokens=8,
                                     previous_response_id=r.id, temperature=0)
        assert r2.usage.input_tokens > r.usage.input_tokens
        got = client.responses.retrieve(r.id)
        assert got.id == r.id
        client.responses.delete(r.id)
        s, _, b = raw(srv.base, "GET", f"/v1/responses/{r.id}")
        assert_error(s, b, 404)

    @check("responses: required function call validates")
    def _():
        t = TOOLS[0]["function"]
        r = client.responses.create(model="m", input="weather in Oslo", max_output_tokens=150,
                                    tool_choice="required", reasoning={"effort": "none"},
                                    tools=[{"type": "function", "name": t["name"], "parameters": t["parameters"],
                                            "strict": True}])
        calls = [o for o in r.output if o.type == "function_call"]
        assert calls, r.output
        jsonschema.validate(json.loads(calls[0].arguments), t["parameters"])

    @check("completions: raw prompt, streamed equals non-streamed")
    def _():
        kw = dict(model="m", prompt="Once upon a time", max_tokens=16, temperature=0)
        r = client.completions.create(**kw)
        s = "".join(c.choices[0].text for c in client.completions.create(stream=True, **kw) if c.choices)
        assert s == r.choices[0].text and r.usage.completion_tokens == 16

    @check("tokenize / detokenize round trip")
    def _():
        s, _, b = raw(srv.base, "POST", "/tokenize", {"content": "Hello world"})
        assert s == 200 and b["tokens"], b
        s, _, d = raw(srv.base, "POST", "/detokenize", {"tokens": b["tokens"]})
        assert d["content"] == "Hello world", d

    @check("32 concurrent greedy streams equal each request alone")
    def _():
        prompts = [f"Tell me about number {i}" for i in range(32)]

        def one(p, stream):
            kw = dict(model="m", messages=[{"role": "user", "content": p}], max_tokens=12,
                      temperature=0, reasoning_effort="none")
            if stream:
                return chat_stream_text(client, **kw)[0]
            return client.chat.completions.create(**kw).choices[0].message.content
        alone = [one(p, False) for p in prompts[:8]] + [None] * 24
        with cf.ThreadPoolExecutor(32) as ex:
            together = list(ex.map(lambda p: one(p, True), prompts))
        for i in range(8, 32, 3):
            alone[i] = one(prompts[i], False)
        for i, a in enumerate(alone):
            if a is not None:
                assert together[i] == a, (i, together[i], a)

    @check("a client hanging up mid-stream leaves the server serving")
    def _():
        body = json.dumps({"messages": MSG, "max_tokens": 2000, "stream": True}).encode()
        sock = socket.create_connection(("127.0.0.1", srv.port))
        sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     + f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
        assert b"200" in sock.recv(4096)
        sock.close()
        deadline = time.time() + 10
        while time.time() < deadline:
            _, _, h = raw(srv.base, "GET", "/health")
            if h["in_flight"] == 0:
                break
            time.sleep(0.1)
        assert h["in_flight"] == 0, h
        r = client.chat.completions.create(model="m", messages=MSG, max_tokens=4)
        assert r.usage.completion_tokens == 4

    @check("errors: bad JSON, wrong types, unknown role, bad params -> 400 error objects")
    def _():
        s, _, b = raw(srv.base, "POST", "/v1/chat/completions", data=b"{nope")
        assert_error(s, b, 400)
        s, _, b = raw(srv.base, "POST", "/v1/chat/completions", {"messages": "hi"})
        assert_error(s, b, 400)
        s, _, b = raw(srv.base, "POST", "/v1/chat/completions", {"messages": [{"role": "wizard", "content": "x"}]})
        assert_error(s, b, 400, "messages[0].role")
        s, _, b = raw(srv.base, "POST", "/v1/chat/completions", {"messages": MSG, "top_p": 5})
        assert_error(s, b, 400, "top_p")
        s, _, b = raw(srv.base, "POST", "/v1/chat/completions", {"messages": MSG, "tool_choice": "required"})
        assert_error(s, b, 400, "tool_choice")
        s, _, b = raw(srv.base, "POST", "/v1/chat/completions", {"messages": MSG, "n": 0})
        assert_error(s, b, 400, "n")
        s, _, b = raw(srv.base, "GET", "/v1/nothing")
        assert_error(s, b, 404)

    @check("errors: a prompt over the context is a 400 naming both numbers")
    def _():
        long = "word " * 5000
        s, _, b = raw(srv.base, "POST", "/v1/chat/completions", {"messages": [{"role": "user", "content": long}]})
        assert_error(s, b, 400)
        assert "2048" in b["error"]["message"], b
        assert any(ch.isdigit() for ch in b["error"]["message"].split("2048")[0]), b

    @check("sloppy clients accepted (parts without type, arguments null, image in tool result)")
    def _():
        s, _, b = raw(srv.base, "POST", "/v1/chat/completions", {"max_tokens": 4, "unknown": 1, "messages": [
            {"role": "user", "content": [{"text": "hi"}]},
            {"role": "assistant", "content": None, "tool_calls": [
                {"id": "c1", "type": "function", "function": {"name": "get_weather", "arguments": None}}]},
            {"role": "tool", "tool_call_id": "c1", "content": [{"type": "image_url", "image_url": {"url": "x"}},
                                                               {"type": "text", "text": "sunny"}]}]})
        assert s == 200, b

    @check("security: API key (401, /health exempt), body limit, CORS closed, 429 with Retry-After")
    def _():
        s, _, b = raw(locked.base, "GET", "/v1/models")
        assert_error(s, b, 401)
        s, _, b = raw(locked.base, "GET", "/v1/models", headers={"Authorization": "Bearer wrong"})
        assert_error(s, b, 401)
        s, _, _ = raw(locked.base, "GET", "/health")
        assert s == 200
        auth = {"Authorization": "Bearer sekrit"}
        s, _, b = raw(locked.base, "GET", "/v1/models", headers=auth)
        assert s == 200, b
        s, _, b = raw(locked.base, "POST", "/v1/chat/completions", {"messages": [{"role": "user", "content": "x" * 8000}]},
                      headers=auth)
        assert_error(s, b, 413)
        s, h, _ = raw(srv.base, "GET", "/v1/models", headers={"Origin": "http://evil.example"})
        assert not any(k.lower() == "access-control-allow-origin" for k in h), h
        body = {"messages": MSG, "max_tokens": 60}
        with cf.ThreadPoolExecutor(8) as ex:
            rs = list(ex.map(lambda _: raw(locked.base, "POST", "/v1/chat/completions", body, headers=auth), range(8)))
        busy = [r for r in rs if r[0] == 429]
        assert busy, [r[0] for r in rs]
        assert_error(busy[0][0], busy[0][2], 429)
        assert any(k.lower() == "retry-after" for k in busy[0][1]), busy[0][1]

    @check("metrics")
    def _():
        with urllib.request.urlopen(srv.base + "/metrics", timeout=10) as r:
            text = r.read().decode()
        assert "gptoss_requests_total" in text, text[:500]


if __name__ == "__main__":
    main()
