"""OpenAI API -> Anthropic's Messages API (``POST /v1/messages``): chat completions, streams
included; and Anthropic clients' own ``/v1/messages``, passed through.

Decisions a client can observe:

- Every chat request field is listed in :data:`.fields.CHAT_FIELDS` as mapped, ignored (it
  cannot change the output) or rejected with a 400 naming it; an unknown field is a 400 too.
- ``max_tokens`` is required by Anthropic: a request without a limit gets the backend's
  ``model_max_tokens`` entry for the model, else its ``max_tokens`` (4096).
- ``response_format`` (``json_schema`` / ``json_object``) becomes a forced tool whose input
  schema is the requested schema (the mapping Bedrock uses: :mod:`extproc.translate.chat_input`);
  the tool's input is returned as the message content with ``finish_reason: stop``.
- ``reasoning_effort`` becomes an extended thinking budget (:data:`.fields.THINKING_BUDGETS`),
  and thinking comes back as ``reasoning_content``, the name OpenAI-compatible servers use.
- ``cache_control`` on content parts, system parts and tools travels as Anthropic's own, and
  its cache reads and writes are accounted apart (``cached_input_tokens``,
  ``cache_write_input_tokens``), both inside OpenAI's ``prompt_tokens``.
- An ``error`` event mid-stream becomes ``data: {"error": {...}}`` and the stream ends without
  ``data: [DONE]``; so does a stream that ends before ``message_stop``.
- Errors keep Anthropic's status, in OpenAI's shape, except 529 (overloaded), which becomes
  503. A 2xx answer the gateway cannot read becomes a 502 (``bad_upstream_response``).

The modules, in the order a request meets them: :mod:`.fields` (the field table),
:mod:`.request` (the Messages request), :mod:`.chat` (the translator), :mod:`.response` (a whole
answer, usage, finish reasons, errors), :mod:`.events` (reading the event stream),
:mod:`.stream` (the event stream as chunks). :mod:`.messages` passes Anthropic clients'
``/v1/messages`` through.
"""
