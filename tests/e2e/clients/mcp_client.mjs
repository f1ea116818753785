// The official MCP TypeScript SDK's client against `rlm mcp` over stdio: the
// handshake, the tools, rlm_ask with progress, rlm_describe, a cancelled
// call (the SDK sends notifications/cancelled) and a path outside the
// allowed roots. Prints one JSON object; test_npm_clients.py asserts on it.
// Usage: node mcp_client.mjs RLM ROOT BASE_URL
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StdioClientTransport } from "@modelcontextprotocol/sdk/client/stdio.js";

const [rlm, root, baseURL] = process.argv.slice(2);
const transport = new StdioClientTransport({
  command: rlm,
  args: ["mcp", "--root", root, "--base-url", baseURL, "--model", "root-model",
         "--sub-model", "sub-model", "--mode", "rlm", "--max-runs", "1"],
  env: process.env,
  stderr: "inherit",
});
const client = new Client({ name: "rlm-e2e", version: "1.0.0" });
await client.connect(transport);
const out = {
  server: client.getServerVersion(),
  capabilities: client.getServerCapabilities(),
  instructions: client.getInstructions?.() ?? null,
};

out.tools = (await client.listTools()).tools.map((t) => ({
  name: t.name,
  required: t.inputSchema.required ?? [],
  has_output_schema: Boolean(t.outputSchema),
}));

// rlm_ask with a progress token (the SDK adds one when onprogress is given);
// the SDK checks structuredContent against the tool's outputSchema.
const progress = [];
const ask = await client.callTool(
  { name: "rlm_ask", arguments: { question: "client-batch", paths: ["src"] } },
  undefined,
  { onprogress: (p) => progress.push(p), timeout: 60000 },
);
out.ask = { isError: ask.isError ?? false, text: ask.content[0].text, structured: ask.structuredContent };
out.progress = progress;

const described = await client.callTool({ name: "rlm_describe", arguments: { paths: ["README.md"] } });
out.describe = { isError: described.isError ?? false, text: described.content[0].text };

// A path outside the roots, through a symbolic link inside one.
const refused = await client.callTool({ name: "rlm_ask", arguments: { question: "client-count", paths: ["leak.txt"] } });
out.refused = { isError: refused.isError ?? false, text: refused.content[0].text };

// A cancelled call: the run waits on a sub-call that takes a minute. With
// one run at a time, the next call is answered promptly only if the
// cancelled run let go of its slot.
const ac = new AbortController();
const started = Date.now();
const slow = client.callTool(
  { name: "rlm_ask", arguments: { question: "client-slow", paths: ["README.md"] } },
  undefined,
  { signal: ac.signal, timeout: 120000, onprogress: () => {} },
);
setTimeout(() => ac.abort("the user cancelled"), 1500);
try {
  await slow;
  out.cancel = { rejected: false };
} catch (err) {
  out.cancel = { rejected: true, name: err.name ?? null, message: String(err.message ?? err) };
}
const after = await client.callTool(
  { name: "rlm_ask", arguments: { question: "client-count", paths: ["README.md"] } },
  undefined,
  { timeout: 30000 },
);
out.after_cancel = { isError: after.isError ?? false, text: after.content[0].text, seconds: (Date.now() - started) / 1000 };

await client.close();
process.stdout.write(JSON.stringify(out) + "\n");
