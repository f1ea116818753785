// The official OpenAI client for Node against `rlm serve`: what the client
// returns for a completion, a streamed completion (every chunk parsed by the
// client), the models list, a wrong key and a full queue. Prints one JSON
// object; test_npm_clients.py asserts on it. Usage:
//   node openai_client.mjs BASE_URL KEY
import OpenAI from "openai";

const [baseURL, key] = process.argv.slice(2);
const client = new OpenAI({ baseURL, apiKey: key, maxRetries: 0, timeout: 60000 });
const out = {};

function header(err, name) {
  const h = err.headers;
  if (!h) return null;
  return typeof h.get === "function" ? h.get(name) : h[name] ?? null;
}

function failure(err) {
  return {
    class: err.constructor.name,
    status: err.status ?? null,
    code: err.code ?? null,
    type: err.type ?? null,
    message: String(err.message),
    retry_after: header(err, "retry-after"),
  };
}

// A completion: the earlier message is the input, the last the question.
const c = await client.chat.completions.create({
  model: "rlm",
  messages: [
    { role: "user", content: "The code word is PLATYPUS." },
    { role: "user", content: "client-find" },
  ],
});
out.completion = {
  object: c.object,
  content: c.choices[0].message.content,
  role: c.choices[0].message.role,
  finish_reason: c.choices[0].finish_reason,
  usage: c.usage,
  rlm: c.rlm ?? null,
};

// A streamed completion, read chunk by chunk through the client's parser.
const stream = await client.chat.completions.create({
  model: "rlm",
  stream: true,
  stream_options: { include_usage: true },
  messages: [{ role: "user", content: "client-batch" }],
});
const chunks = [];
for await (const chunk of stream) {
  chunks.push({
    object: chunk.object,
    id: chunk.id,
    delta: chunk.choices[0]?.delta ?? null,
    finish_reason: chunk.choices[0]?.finish_reason ?? null,
    usage: chunk.usage ?? null,
  });
}
out.stream = chunks;

// The models: "rlm" and one per named input.
const models = [];
for await (const m of client.models.list()) models.push(m.id);
out.models = models;

// A wrong key.
try {
  const bad = new OpenAI({ baseURL, apiKey: "sk-wrong", maxRetries: 0 });
  await bad.chat.completions.create({ model: "rlm", messages: [{ role: "user", content: "x" }] });
  out.wrong_key = { class: "none" };
} catch (err) {
  out.wrong_key = failure(err);
}

// A full queue (the server runs one at a time, queues none): a slow run
// holds the slot, the next request is refused with 429.
const slow = client.chat.completions.create({
  model: "rlm",
  messages: [{ role: "user", content: "client-wait" }],
});
const health = baseURL.replace(/\/v1\/?$/, "") + "/health";
for (let i = 0; i < 600; i++) {
  const h = await (await fetch(health)).json();
  if (h.runs_in_flight >= 1) break;
  await new Promise((resolve) => setTimeout(resolve, 50));
}
try {
  await client.chat.completions.create({ model: "rlm", messages: [{ role: "user", content: "client-count" }] });
  out.full_queue = { class: "none" };
} catch (err) {
  out.full_queue = failure(err);
}
out.slow = (await slow).choices[0].message.content;

process.stdout.write(JSON.stringify(out) + "\n");
