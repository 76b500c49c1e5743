// Echo client run inside a lab namespace: `node echo-client.mjs '<json options>'` with
// { mode: 'once' | 'hold', proto: 'tcp' | 'udp', host, port, timeoutMs }.
// once: one round trip with a random token; prints {"ok":true} or {"ok":false,"error":...}.
// hold (tcp only): connects, prints {"connected":...}, then for each token line on stdin sends
// it over the same connection and prints {"pong":token} when it comes back. The connection
// is never re-opened, so a pong proves this very (ESTABLISHED) flow still passes.
import { randomBytes } from 'node:crypto';
import dgram from 'node:dgram';
import net from 'node:net';
import readline from 'node:readline';

const opts = JSON.parse(process.argv[2] ?? '{}');

function out(obj) {
  process.stdout.write(`${JSON.stringify(obj)}\n`);
}

function once() {
  const token = randomBytes(8).toString('hex');
  let done = false;
  const finish = (ok, error) => {
    if (done) return;
    done = true;
    out(ok ? { ok } : { ok, error });
    process.exit(0);
  };
  setTimeout(() => finish(false, 'ETIMEDOUT'), opts.timeoutMs);

  if (opts.proto === 'tcp') {
    let buf = '';
    const socket = net.connect({ host: opts.host, port: opts.port }, () => {
      socket.write(`${token}\n`);
    });
    socket.setEncoding('utf8');
    socket.on('data', (d) => {
      buf += d;
      if (buf.includes(token)) finish(true);
    });
    socket.on('error', (err) => finish(false, err.code ?? err.message));
    socket.on('close', () => finish(false, 'ECLOSED'));
  } else {
    const socket = dgram.createSocket(net.isIPv6(opts.host) ? 'udp6' : 'udp4');
    socket.on('message', (msg) => {
      if (msg.toString() === token) finish(true);
    });
    socket.on('error', (err) => finish(false, err.code ?? err.message));
    socket.connect(opts.port, opts.host, () => {
      // UDP has no retransmission of its own; resend so that one datagram queued behind
      // neighbour discovery cannot turn a working path into a false "blocked".
      const send = () => socket.send(token);
      send();
      setInterval(send, 250).unref();
    });
  }
}

function hold() {
  let connected = false;
  const pending = new Set();
  let buf = '';
  const socket = net.connect({ host: opts.host, port: opts.port }, () => {
    connected = true;
    out({ connected: true });
  });
  socket.setEncoding('utf8');
  socket.on('data', (d) => {
    buf += d;
    const lines = buf.split('\n');
    buf = lines.pop() ?? '';
    for (const line of lines) {
      if (pending.delete(line)) out({ pong: line });
    }
  });
  socket.on('error', (err) => {
    out(
      connected
        ? { closed: true, error: err.code ?? err.message }
        : { connected: false, error: err.code ?? err.message },
    );
    process.exit(0);
  });
  socket.on('close', () => {
    out({ closed: true });
    process.exit(0);
  });
  const timer = setTimeout(() => {
    if (!connected) {
      out({ connected: false, error: 'ETIMEDOUT' });
      process.exit(0);
    }
  }, opts.timeoutMs);
  timer.unref();
  const rl = readline.createInterface({ input: process.stdin });
  rl.on('line', (token) => {
    pending.add(token);
    socket.write(`${token}\n`);
  });
  rl.on('close', () => socket.end());
}

if (opts.mode === 'hold') hold();
else once();
