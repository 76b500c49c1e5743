// Opens and closes TCP connections to host:port for `seconds` with `concurrency` loops and
// prints {"connections": n, "failures": f, "seconds": s}. Runs inside a lab namespace.
import net from 'node:net';

const [host, port, seconds = '3', concurrency = '8'] = process.argv.slice(2);
const deadline = Date.now() + Number(seconds) * 1000;
let connections = 0;
let failures = 0;

function once() {
  return new Promise((resolve) => {
    const s = net.connect({ host, port: Number(port) });
    s.setTimeout(1000);
    s.once('connect', () => {
      connections++;
      // RST instead of FIN: no TIME_WAIT, so the client never runs out of ephemeral ports and
      // later runs measure the firewall, not port exhaustion.
      s.resetAndDestroy();
      resolve();
    });
    s.once('error', () => {
      failures++;
      resolve();
    });
    s.once('timeout', () => {
      failures++;
      s.destroy();
      resolve();
    });
  });
}

async function loop() {
  while (Date.now() < deadline) await once();
}

await Promise.all(Array.from({ length: Number(concurrency) }, loop));
console.log(JSON.stringify({ connections, failures, seconds: Number(seconds) }));
