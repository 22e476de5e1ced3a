"""OpenAI API -> AWS Bedrock: chat and the Responses API via Converse / ConverseStream,
embeddings via InvokeModel.

Requests are rewritten into Bedrock's shapes (the model id goes in the path, URL-encoded: ids
such as ``anthropic.claude-3-5-sonnet-20240620-v1:0`` or inference profile ARNs contain ``:``
and ``/``). Responses come back as OpenAI JSON; a ConverseStream body (binary
``application/vnd.amazon.eventstream``) is decoded frame by frame and each event is sent on at
once as an SSE chunk.

Decisions a client can observe:

- Every chat request field is listed in :data:`.fields.CHAT_FIELDS` as mapped, ignored (it
  cannot change the output) or rejected with a 400 naming it; an unknown field is a 400 too.
  Silently dropping a field that changes the output (``n``, ``logprobs``, ``seed``...) would
  return something the client did not ask for.
- ``response_format`` (``json_schema`` / ``json_object``) becomes a forced tool whose input
  schema is the requested schema; the tool's input is returned as the message content with
  ``finish_reason: stop``. Converse's native ``outputConfig.textFormat`` only exists for some
  models; forced tool use works on every model that supports ``toolChoice``.
- ``tool_choice: none`` cannot be expressed in Converse (no ``none`` member, and ``toolConfig``
  is mandatory as soon as the history holds tool blocks), so the tools are withheld and the tool
  history is sent as plain text: the model then cannot call a tool.
- An exception frame in the middle of a stream becomes ``data: {"error": {...}}`` (OpenAI's
  error shape, which the OpenAI SDKs raise as ``APIError``) and the stream ends *without*
  ``data: [DONE]``, so a client that only watches for ``[DONE]`` cannot mistake a truncated
  answer for a complete one. A stream that ends before ``messageStop`` is reported the same way.
- Reasoning blocks are passed on as ``reasoning_content``, the name the OpenAI-compatible
  servers that return reasoning use, and whole as ``thinking_blocks`` (LiteLLM's field: text and
  signature, or redacted data), which a client sends back on the assistant message so that a
  thinking tool conversation reaches Converse unchanged (:mod:`.reasoning`).
- ``cache_control`` marks become ``cachePoint`` blocks after what they mark (:mod:`.caching`).
- Errors keep Bedrock's status, except those an OpenAI client or Envoy's retry policy (5xx and
  429) would misread: quota exhaustion becomes 429, a model error 502, a model timeout 504.
- A 2xx Converse or InvokeModel body the gateway cannot read becomes a 502
  (``bad_upstream_response``): the body is buffered, so the status has not left yet.
- Titan embeds one text per InvokeModel call, so a Titan batch is split into one call per input
  (:meth:`.embeddings.BedrockEmbeddings.fan_out`), which the sidecar sends itself, and the
  replies are merged in input order. If any call fails the client gets that error, translated as above,
  and no embeddings: a partial list would misalign the client's indexes.

- The Responses API (``/v1/responses``) is translated with chat's parts and its own field
  table (:data:`.responses_fields.RESPONSES_FIELDS`); Bedrock keeps no state, so what needs a
  stored response or a server-side tool is a 400 naming the field, and ``store`` stores nothing.

The modules, in the order a request meets them: :mod:`.fields` (the field table and its check),
:mod:`.request` (the Converse request; :mod:`.tools`, :mod:`.reasoning`, :mod:`.caching`
for its parts), :mod:`.converse_translator` (what the Converse translators share), :mod:`.chat`
(the chat translator), :mod:`.buffered` (a whole answer, shared with embeddings),
:mod:`.chat_response` (Converse's answer), :mod:`.converse_events` (ConverseStream's frames),
:mod:`.stream` (as chat chunks), :mod:`.errors` (Bedrock's errors), :mod:`.embeddings`; for the
Responses API :mod:`.responses_fields`, :mod:`.responses_request`, :mod:`.responses` (its
translator), :mod:`.responses_answer`, :mod:`.responses_stream`.

The translator of each endpoint is registered in :mod:`extproc.backends`.
"""
