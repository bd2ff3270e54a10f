// A fake OpenAI-compatible LLM on loopback for driving real OpenClaw agent turns in tests.
// A user message `RUN: <command>` is answered with an `exec` tool call running <command>; a request
// that carries the tool's result is answered with `RESULT: <the result>` as plain text. Each request
// is appended to the log file given as the second argument (one JSON line) for the test to inspect.
import http from "node:http";
import fs from "node:fs";

const port = Number(process.argv[2] ?? 18111);
const logFile = process.argv[3];
let calls = 0;

function chunk(res, delta, finish) {
  const body = {
    id: "chatcmpl-fake", object: "chat.completion.chunk", created: Math.floor(Date.now() / 1000),
    model: "fake-model", choices: [{ index: 0, delta, finish_reason: finish }],
  };
  res.write(`data: ${JSON.stringify(body)}\n\n`);
}

function text(content) {
  if (typeof content === "string") return content;
  if (Array.isArray(content)) return content.map((p) => p.text ?? "").join("");
  return "";
}

http.createServer((req, res) => {
  let raw = "";
  req.on("data", (d) => { raw += d; });
  req.on("end", () => {
    let body = {};
    try { body = JSON.parse(raw || "{}"); } catch { /* answered below */ }
    const messages = body.messages ?? [];
    // OpenClaw adds context messages of its own: the command is in whichever user message has it. A
    // session's history holds earlier turns too: only a tool result after this turn's request counts.
    const at = messages.findLastIndex((m) => m.role === "user" && /RUN: /.test(text(m.content)));
    const user = at >= 0 ? messages[at] : undefined;
    const tool = messages.slice(at + 1).findLast((m) => m.role === "tool");
    const asked = /RUN: ([^\n]*)/.exec(text(user?.content ?? ""));
    if (logFile) {
      fs.appendFileSync(logFile, JSON.stringify({ url: req.url, tool: tool ? text(tool.content) : null,
        user: text(user?.content ?? "") }) + "\n");
    }
    if (!req.url.endsWith("/chat/completions")) {
      res.writeHead(200, { "content-type": "application/json" });
      res.end(JSON.stringify({ object: "list", data: [{ id: "fake-model", object: "model" }] }));
      return;
    }
    res.writeHead(200, { "content-type": "text/event-stream", "cache-control": "no-cache" });
    if (tool || !asked) {
      const reply = tool ? `RESULT: ${text(tool.content)}` : "nothing to run";
      chunk(res, { role: "assistant", content: reply }, null);
      chunk(res, {}, "stop");
    } else {
      calls += 1;
      const args = JSON.stringify({ command: asked[1].trim() });
      chunk(res, { role: "assistant", content: null, tool_calls: [{ index: 0, id: `call_${calls}`, type: "function",
        function: { name: "exec", arguments: args } }] }, null);
      chunk(res, {}, "tool_calls");
    }
    res.write("data: [DONE]\n\n");
    res.end();
  });
}).listen(port, "127.0.0.1");
