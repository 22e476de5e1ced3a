// Drives the gateway with the official OpenAI Node SDK (its own fetch, its own
// accept-encoding) and prints what it got as one JSON line for the Python test to check.
import OpenAI from "openai";

const [baseURL, model, embedModel] = process.argv.slice(2);
const client = new OpenAI({ baseURL, apiKey: "node-client", maxRetries: 0 });
const messages = [{ role: "user", content: "hello from node" }];

const chat = await client.chat.completions.create({ model, messages });
let streamed = "";
let streamUsage = null;
const stream = await client.chat.completions.create({
  model,
  messages,
  stream: true,
  stream_options: { include_usage: true },
});
for await (const chunk of stream) {
  streamed += chunk.choices[0]?.delta?.content ?? "";
  if (chunk.usage) streamUsage = chunk.usage;
}
const inputs = Array.from({ length: 16 }, (_, i) => `node input ${i}`);
const embeddings = await client.embeddings.create({ model: embedModel, input: inputs });
console.log(
  JSON.stringify({
    chat: chat.choices[0].message.content,
    chatUsage: chat.usage,
    streamed,
    streamUsage,
    vectors: embeddings.data.length,
    embedUsage: embeddings.usage,
  }),
);
