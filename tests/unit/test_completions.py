"""Text completions without sockets: the prompt estimate, the answer's text for an estimate,
a stream's usage chunk asked for and hidden as chat's is."""

from __future__ import annotations

import orjson

from extproc import tokens
from extproc.translate import RequestContext
from extproc.translate.openai import PassThrough
from extproc.usage import SSEObserver, answer_text
from tests.fakes.completions import chunks, completion
from tests.fakes.openai import sse_events

BODY = {"model": "gpt-3.5-turbo-instruct", "prompt": "one two three", "stream": True}
SSE = {"content-type": "text/event-stream"}


def test_the_prompt_is_read_for_an_estimate() -> None:
    model = "gpt-3.5-turbo-instruct"
    assert tokens.prompt_tokens(orjson.dumps(BODY), model) == tokens.count("one two three", model)
    batch = {**BODY, "prompt": ["one", "two"]}
    assert tokens.prompt_tokens(orjson.dumps(batch), model) == 2


def test_the_answers_text_is_read_whole_and_streamed() -> None:
    assert answer_text(completion(BODY)) == "Echo: one two three"
    observer = SSEObserver(strip_usage=False)
    observer.feed(b"".join(sse_events(chunks(BODY, include_usage=False))), True)
    assert "".join(observer.said) == "Echo: one two three" and observer.done


def test_a_stream_gets_usage_asked_upstream_and_hidden_from_the_client() -> None:
    ctx = RequestContext("text_completion", "m", "m", "m", "/v1/completions", True, False)
    translator = PassThrough(ctx, "/v1/completions")
    sent = translator.request(orjson.dumps(BODY)).body
    assert sent is not None and orjson.loads(sent)["stream_options"] == {"include_usage": True}
    assert translator.response_body_mode(200, SSE) == "streamed"
    out = translator.response_body(b"".join(sse_events(chunks(BODY, include_usage=True))), True)
    assert out == b"".join(sse_events(chunks(BODY, include_usage=False)))
    assert translator.usage is not None and translator.usage.output_tokens == 4
