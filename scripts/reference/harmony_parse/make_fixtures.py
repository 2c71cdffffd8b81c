#!/usr/bin/env python3
"""Peer fixtures for `gptoss parse`: completions (token ids) and what openai-harmony's
`StreamableParser` makes of them, strict and non-strict, whole and as partial streams.

    python3 -m venv /tmp/hvenv && /tmp/hvenv/bin/pip install openai-harmony==0.0.8
    git clone --depth 1 --branch v0.0.8 https://github.com/openai/harmony /tmp/harmony-src
    HARMONY_REPO=/tmp/harmony-src /tmp/hvenv/bin/python scripts/reference/harmony_parse/make_fixtures.py

(HARMONY_REPO: a checkout of openai/harmony v0.0.8, for its test-data/ files.)

Writes crates/gpt-cli/tests/fixtures/harmony_parse/{openai_harmony,llama_cpp}.json.

Sources of the inputs (read for their data; nothing is copied from their code):
* openai/harmony v0.0.8: the parsing tests of tests/test_harmony.py and src/tests.rs and the
  token files / rendered conversations of test-data/;
* ggml-org/llama.cpp: the gpt-oss cases of tests/test-chat.cpp (`test_chat_parse` with
  COMMON_CHAT_FORMAT_GPT_OSS and COMMON_REASONING_FORMAT_AUTO, tool calls parsed), whose
  expected (content, reasoning_content, tool call) is kept as `llama_cpp` in the fixture.
Every input is rendered to tokens with openai-harmony's encoder (`allowed_special="all"`),
and every expected message list comes from openai-harmony's `StreamableParser`.

Offline: TIKTOKEN_ENCODINGS_BASE is pointed at tiktoken-rs's bundled o200k_base.tiktoken
(openai-harmony checks its sha256).
"""
import glob
import json
import os

ASSETS = sorted(glob.glob(os.path.expanduser(
    "~/.cargo/registry/src/*/tiktoken-rs-*/assets/o200k_base.tiktoken")))
if ASSETS and "TIKTOKEN_ENCODINGS_BASE" not in os.environ:
    os.environ["TIKTOKEN_ENCODINGS_BASE"] = os.path.dirname(ASSETS[-1])

import openai_harmony  # noqa: E402
from openai_harmony import (  # noqa: E402
    Author, HarmonyEncodingName, HarmonyError, Message, Role, StreamableParser, StreamState,
    load_harmony_encoding)

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
OUT = os.path.join(ROOT, "crates", "gpt-cli", "tests", "fixtures", "harmony_parse")
ENC = load_harmony_encoding(HarmonyEncodingName.HARMONY_GPT_OSS)
HARMONY = "openai/harmony@v0.0.8 "
LLAMA = "ggml-org/llama.cpp tests/test-chat.cpp (gpt-oss) "


def enc(text):
    return ENC.encode(text, allowed_special="all")


def msg_dict(m):
    d = m.to_dict()
    return {"role": d["role"], "name": d.get("name"), "recipient": d.get("recipient"),
            "channel": d.get("channel"), "content_type": d.get("content_type"),
            "content": "".join(c["text"] for c in d["content"])}


def run(tokens, role, strict, partial):
    """What openai-harmony's StreamableParser gives for `tokens` (EOS unless `partial`)."""
    p = StreamableParser(ENC, role, strict=strict)
    try:
        for t in tokens:
            p.process(t)
        if not partial:
            p.process_eos()
    except HarmonyError as e:
        return {"ok": False, "error": str(e)}
    out = {"ok": True, "messages": [msg_dict(m) for m in p.messages], "current": None}
    if p.state == StreamState.CONTENT:
        out["current"] = {"role": p.current_role.value, "channel": p.current_channel,
                          "recipient": p.current_recipient,
                          "content_type": p.current_content_type,
                          "content": p.current_content}
    return out


def case(name, source, tokens, role, cuts=None, llama_cpp=None):
    """One fixture: whole-stream and partial parses, strict and non-strict, plus partial
    parses of the prefixes of length `cuts` (only where the text is valid UTF-8 at every
    token: openai-harmony holds back valid bytes after an invalid sequence until the next
    token, which a prefix would expose)."""
    lens = sorted({len(tokens), *[c for c in (cuts or ()) if 0 <= c < len(tokens)]})
    parses = []
    for partial, n in [(False, len(tokens))] + [(True, n) for n in lens]:
        got = {strict: run(tokens[:n], role, strict, partial) for strict in (True, False)}
        # `modes`: the parser modes that give this result (one entry when both agree).
        if got[True] == got[False]:
            parses.append({"modes": ["strict", "non_strict"], "partial": partial, "len": n, **got[True]})
        else:
            for strict, r in got.items():
                parses.append({"modes": ["strict" if strict else "non_strict"], "partial": partial,
                               "len": n, **r})
    c = {"name": name, "source": source, "role": "none" if role is None else role.value,
         "tokens": tokens, "text": ENC.decode([t for t in tokens if t < 2**31]), "parses": parses}
    if cuts is None:
        # Invalid UTF-8: openai-harmony's `current_content` of an unfinished body may lag
        # behind (see above); gptoss streams those bytes one token earlier.
        c["invalid_utf8"] = True
    if llama_cpp is not None:
        c["llama_cpp"] = llama_cpp
    return c


def spread(tokens, k=6):
    """`k` cut points spread over the stream, plus the cuts around every special token."""
    n = len(tokens)
    cuts = {n * i // (k + 1) for i in range(1, k + 1)}
    for i, t in enumerate(tokens):
        if ENC.is_special_token(t):
            cuts.update((i, i + 1))
    return sorted(cuts)


def test_data(name):
    return open(os.path.join(HARMONY_DIR, "test-data", name), encoding="utf-8").read()


HARMONY_DIR = os.environ.get("HARMONY_REPO", "/tmp/harmony-src")


def harmony_cases():
    cases = []
    A = Role.ASSISTANT
    # Token files (completions after `<|start|>assistant`).
    for f in ("test_simple_reasoning_response", "test_simple_tool_call"):
        toks = [int(x) for x in test_data(f + ".txt").split()]
        cases.append(case(f, HARMONY + "test-data/" + f + ".txt", toks, A, spread(toks)))
    toks = enc(test_data("test_streamable_parser.txt").rstrip())
    cases.append(case("test_streamable_parser", HARMONY + "tests/test_harmony.py::test_streamable_parser",
                      toks, A, spread(toks, 4)))
    # Missing <|message|> (non-strict recovery).
    for name, text in [
        ("missing_message_token",
         "I must refuse<|end|><|start|>assistant<|channel|>analysis<|message|>We must refuse<|end|>"
         "<|start|>assistant<|channel|>final<|message|>I'm sorry, but I can't help with that.<|return|>"),
        ("missing_message_token_other_initial_headers",
         "<|channel|>analysis I must refuse<|end|><|start|>assistant<|channel|>analysis<|message|>We must refuse<|end|>"
         "<|start|>assistant<|channel|>final<|message|>I'm sorry, but I can't help with that.<|return|>"),
        ("missing_message_token_tool_call",
         "... Let's use the tool.<|end|><|start|>assistant to=functions.get_weather<|channel|>commentary json"
         '<|message|>{"location": "Tokyo"}<|call|>'),
        ("missing_message_token_requires_non_strict_mode", "<|channel|>commentary Hello<|end|>"),
    ]:
        toks = enc(text)
        cases.append(case(name, HARMONY + "test_streamable_parser_" + name, toks, A, spread(toks, 3)))
    # What a model may emit outside the grammar (serving-design.md §5): a stray stop token
    # after <|end|>, text after the end, <|start|> inside content, malformed headers. Each
    # has the input that `gptoss parse --lenient` must parse like: the stream repaired as the
    # lenient mode documents (gpt-engine harmony/parser.rs), parsed by openai-harmony.
    F = "<|channel|>final<|message|>Hi.<|return|>"
    for name, text, repaired, strict in [
        ("stray_return_after_end", "<|channel|>final<|message|>Hi.<|end|><|return|>",
         "<|channel|>final<|message|>Hi.<|end|>", True),
        ("text_after_end", F + " and more", F, True),
        ("start_inside_content",
         "<|channel|>analysis<|message|>Think<|start|>assistant" + F,
         "<|channel|>analysis<|message|>Think<|end|><|start|>assistant" + F, True),
        ("channel_inside_content", "<|channel|>analysis<|message|>Think" + F,
         "<|channel|>analysis<|message|>Think<|end|><|start|>assistant" + F, True),
        ("missing_start_after_end", "<|channel|>analysis<|message|>Think<|end|>" + F,
         "<|channel|>analysis<|message|>Think<|end|><|start|>assistant" + F, True),
        ("stop_token_inside_header", "<|channel|>final<|end|><|message|>Hi.<|return|>",
         "<|channel|>final<|end|>", False),
        ("empty_channel_name", "<|channel|><|message|>Hi.<|return|>", "<|message|>Hi.<|return|>", True),
        ("extra_header_words", "<|channel|>final one two three<|message|>Hi.<|return|>", F, True),
        ("unknown_role_after_start", "<|channel|>final<|message|>A<|end|><|start|>robot<|message|>B<|end|>",
         "<|channel|>final<|message|>A<|end|><|start|>assistant<|message|>B<|end|>", True),
        ("constrain_inside_content", "<|channel|>final<|message|>a<|constrain|>b<|message|>c<|return|>",
         "<|channel|>final<|message|>abc<|return|>", True),
        ("return_inside_first_header", "Hello there<|return|>", "Hello there<|return|>", False),
    ]:
        toks = enc(text)
        c = case(name, "robustness (serving-design.md 5), parsed by " + HARMONY, toks, A, spread(toks, 2))
        want = run(enc(repaired), A, strict, False)
        assert want["ok"], (name, want)
        c["lenient"] = {"repaired": repaired, "strict": strict, "messages": want["messages"]}
        cases.append(c)
    # Whole transcripts (role none).
    for name, text in [
        ("tool_call_with_constrain_tokenized_correctly",
         '<|start|>assistant to=functions.get_weather<|channel|>commentary <|constrain|>json<|message|>{"location": "Tokyo"}<|call|>'),
        ("tool_call_with_constrain_marker_adjacent",
         '<|start|>assistant to=functions.get_weather<|channel|>commentary<|constrain|>json<|message|>{"location": "Tokyo"}<|call|>'),
        ("tool_call_with_constrain_marker_adjacent_end",
         '<|start|>assistant to=functions.get_weather<|channel|>commentary<|constrain|>json<|message|>{"location": "Tokyo"}<|end|>'),
        ("tool_call_with_channel_before_recipient_and_constrain_adjacent",
         '<|start|>assistant<|channel|>commentary to=functions.get_weather<|constrain|>json<|message|>{"latitude":48.8566,"longitude":2.3522}<|call|>'),
    ]:
        toks = enc(text)
        cases.append(case(name, HARMONY + "test_" + name, toks, None, spread(toks, 3)))
    tool_msg = (Message.from_author_and_content(Author.new(Role.TOOL, "browser.search"),
                                                '{"result": "https://openai.com/"}')
                .with_channel("commentary").with_recipient("assistant"))
    toks = ENC.render(tool_msg)[:-1]
    cases.append(case("tool_response_parsing", HARMONY + "tests/test_harmony.py::test_tool_response_parsing",
                      toks, None, spread(toks, 2)))
    # UTF-8 handling (no prefixes: see `case`).
    pre = enc("<|start|>assistant<|message|>")
    cases += [
        case("invalid_utf8_decoding", HARMONY + "test_streamable_parser_invalid_utf8_decoding",
             pre + [9552, 9552] + enc("worked<|end|>"), None),
        case("invalid_utf8_split_across_tokens", HARMONY + "test_streamable_parser_invalid_utf8_decoding_split_across_tokens",
             pre + [9552] + enc("XY") + enc("<|end|>"), None),
        case("invalid_utf8_multi_byte_token", HARMONY + "test_streamable_parser_invalid_utf8_decoding_multi_byte_token",
             pre + [9552] + enc(" interesting") + enc("<|end|>"), None),
        case("invalid_utf8_no_eos_marker", HARMONY + "test_streamable_parser_invalid_utf8_decoding_multi_byte_token_no_eos_marker",
             pre + [9552] + enc(" interesting") + enc(" story") + enc("Y")[:1], None),
        case("does_not_leak_bytes_between_messages", HARMONY + "src/tests.rs::test_streamable_parser_does_not_leak_bytes_between_messages",
             pre + [9552, 9552] + enc("<|end|>") + pre + enc("Hi") + enc("<|end|>"), None),
        case("flushes_partial_bytes_on_eos", HARMONY + "src/tests.rs::test_streamable_parser_flushes_partial_bytes_on_eos",
             pre + [9552] + enc("Hi"), None),
        case("invalid_content_token_errors_on_eos", HARMONY + "src/tests.rs::test_parse_completion_with_invalid_content_token_errors_on_eos",
             enc("<|start|>assistant<|channel|>analysis<|message|>Practice invalid token handling.") + [2**32 - 1], None),
    ]
    emoji = ENC.encode("💖")
    toks = pre + emoji + enc("<|end|>")
    cases.append(case("waits_for_multi_token_utf8_sequence",
                      HARMONY + "src/tests.rs::test_streamable_parser_waits_for_multi_token_utf8_sequence",
                      toks, None, range(len(pre), len(toks))))
    tricky = ("Hello Müller, Γειά σου, Привет, שלום, مرحبا, नमस्ते, こんにちは, 안녕하세요,"
              " 你好. Normalized (naïve) vs. decomposed (naïve) characters. "
              "Some emojis: 😊👋🏾👨‍👩‍👧‍👦🇺🇸.")
    toks = pre + ENC.encode(tricky) + enc("<|end|>")
    cases.append(case("tricky_utf8_decoding", HARMONY + "test_streamable_parser_tricky_utf8_decoding",
                      toks, None, spread(toks, 8)))
    # Rendered conversations of test-data/ (transcripts from <|start|>; most end in a prompt).
    for f in ("test_dropping_cot_by_default", "test_preserve_cot", "test_keep_analysis_between_finals",
              "test_does_not_drop_if_ongoing_analysis", "test_simple_convo"):
        toks = enc(test_data(f + ".txt"))
        cases.append(case(f, HARMONY + "test-data/" + f + ".txt", toks, None, spread(toks, 3)))
    return cases


def expect(content="", reasoning="", tool=None, args=None, partial=False):
    calls = [] if tool is None else [{"name": tool, "arguments": args}]
    return {"partial": partial, "content": content, "reasoning_content": reasoning, "tool_calls": calls}


def llama_cases():
    think = "<|channel|>analysis<|message|>I'm\nthinking<|end|>"
    hello = "Hello, world!\nWhat's up?"
    call = "<|start|>assistant<|channel|>commentary to=functions.special_function <|constrain|>json<|message|>"
    rows = [
        ("analysis_unfinished", "<|channel|>analysis<|message|>I'm\nthink", expect("", "I'm\nthink", partial=True)),
        ("analysis_ended", think, expect("", "I'm\nthinking", partial=True)),
        ("analysis_then_final", think + "<|start|>assistant<|channel|>final<|message|>" + hello,
         expect(hello, "I'm\nthinking")),
        ("tool_call_partial_args", think + call + '{"arg1',
         expect("", "I'm\nthinking", "special_function", '{"arg1', partial=True)),
        ("tool_call_no_constrain_partial", think + "<|start|>assistant<|channel|>commentary to=functions.special_function<|message|>{\"arg1",
         expect("", "I'm\nthinking", "special_function", '{"arg1', partial=True)),
        ("tool_call", think + call + '{"arg1": 1}', expect("", "I'm\nthinking", "special_function", '{"arg1": 1}')),
        ("tool_call_in_analysis_channel",
         think + "<|start|>assistant<|channel|>analysis to=functions.special_function <|constrain|>json<|message|>{\"arg1\": 1}",
         expect("", "I'm\nthinking", "special_function", '{"arg1": 1}')),
        ("preamble_partial", think + "<|start|>assistant<|channel|>commentary<|message|>" + hello,
         expect(hello, "I'm\nthinking", partial=True)),
        ("preamble_then_tool_call",
         think + "<|start|>assistant<|channel|>commentary<|message|>" + hello + "<|end|>" + call + '{"arg1": 1}',
         expect(hello, "I'm\nthinking", "special_function", '{"arg1": 1}', partial=True)),
        ("recipient_in_role_header",
         " to=functions.special_function<|channel|>commentary <|constrain|>json<|message|>{\"arg1\": 1}",
         expect("", "", "special_function", '{"arg1": 1}')),
        ("recipient_in_role_header_analysis",
         " to=functions.special_function<|channel|>analysis <|constrain|>json<|message|>{\"arg1\": 1}",
         expect("", "", "special_function", '{"arg1": 1}')),
        ("recipient_in_later_role_header",
         think + "<|start|>assistant to=functions.special_function<|channel|>analysis <|constrain|>json<|message|>{\"arg1\": 1}",
         expect("", "I'm\nthinking", "special_function", '{"arg1": 1}')),
    ]
    out = []
    for name, text, exp in rows:
        toks = enc(text)
        out.append(case(name, LLAMA + "test_chat_parse(is_partial=%s)" % str(exp["partial"]).lower(),
                        toks, Role.ASSISTANT, spread(toks, 3), llama_cpp=exp))
    return out


def main():
    os.makedirs(OUT, exist_ok=True)
    meta = {"generator": "scripts/reference/harmony_parse/make_fixtures.py",
            "openai_harmony": getattr(openai_harmony, "__version__", "0.0.8")}
    for fname, cases in (("openai_harmony.json", harmony_cases()), ("llama_cpp.json", llama_cases())):
        with open(os.path.join(OUT, fname), "w", encoding="utf-8") as f:
            json.dump({**meta, "cases": cases}, f, ensure_ascii=False, separators=(",", ":"))
            f.write("\n")
        n = sum(len(c["parses"]) for c in cases)
        print(f"{fname}: {len(cases)} cases, {n} parses, {os.path.getsize(os.path.join(OUT, fname))} bytes")


if __name__ == "__main__":
    main()
