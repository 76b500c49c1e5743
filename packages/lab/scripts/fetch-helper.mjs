// HTTP helper that lives inside a lab namespace, because the test process (root namespace)
// cannot reach namespace addresses. JSON lines: stdin
// {id, method, url, headers, body, timeoutMs} -> stdout {id, status, headers, text} | {id, error}.
// Requests run concurrently; answers carry the id they belong to.
import readline from 'node:readline';

function out(obj) {
  process.stdout.write(`${JSON.stringify(obj)}\n`);
}

const rl = readline.createInterface({ input: process.stdin });
rl.on('line', async (line) => {
  let req;
  try {
    req = JSON.parse(line);
  } catch {
    return;
  }
  try {
    const res = await fetch(req.url, {
      method: req.method,
      headers: req.headers,
      body: req.body,
      signal: AbortSignal.timeout(req.timeoutMs),
    });
    out({
      id: req.id,
      status: res.status,
      headers: Object.fromEntries(res.headers),
      text: await res.text(),
    });
  } catch (err) {
    out({ id: req.id, error: err.cause?.code ?? err.name ?? String(err) });
  }
});
rl.on('close', () => process.exit(0));
