// One agent TLS handshake, full and resumed, on both sides (issue 9, the reconnect storm): the
// control plane's own listener (grpc-listener.ts, its PKI, a client certificate its CA issued)
// in a child process, so that its CPU is its own, and clients with the agent's TLS settings (as
// createResumingCredentials: the CA, the certificate, ALPN h2, the last ticket offered). The
// server writes a byte and closes each connection once its handshake finished. Prints the CPU
// per connection of each side for a full handshake and for one that resumed a session, and how
// many the listener counted as resumed. `BENCH_TLS_CONNECTIONS` (2,000), 32 at a time.
import { fork } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connect, createSecureContext } from 'node:tls';
import { pino } from 'pino';
import { createCsrs, createSharedKey } from './fleet-agent.js';
import { SERVER_NAME } from './fleet-h2.js';

const internal = <M>(file: string): Promise<M> =>
  import(new URL(`../../packages/control-plane/dist/${file}`, import.meta.url).href) as Promise<M>;
const { createPki } =
  await internal<typeof import('../packages/control-plane/dist/pki.js')>('pki.js');

const short = process.argv.includes('--short');
const N = Number(process.env.BENCH_TLS_CONNECTIONS ?? (short ? 200 : 2000));
const CONCURRENCY = 32;
const cpuMs = (u = process.cpuUsage()) => (u.user + u.system) / 1000;

if (process.argv[2] === 'server') {
  // The control plane's listener on the PKI in argv[3]; answers 'cpu' with its CPU and counts.
  const { bindAgentPort } =
    await internal<typeof import('../packages/control-plane/dist/grpc.js')>('grpc.js');
  const pki = await createPki({ dir: process.argv[3]! });
  const handshakes = { full: 0, resumed: 0 };
  const listener = await bindAgentPort({
    host: '127.0.0.1',
    port: 0,
    pki,
    log: pino({ level: 'silent' }),
  });
  listener.serve({
    // A byte first, as HTTP/2's SETTINGS would be: OpenSSL sends the tickets with the first
    // write after the handshake, and an end alone sends none.
    onSecure: (socket) => socket.end('x'),
    onHandshake: (resumed) => handshakes[resumed ? 'resumed' : 'full']++,
  });
  process.on('message', () => process.send!({ cpuMs: cpuMs(), ...handshakes }));
  process.send!({ port: listener.port });
} else {
  const dir = mkdtempSync(join(tmpdir(), 'bench-tls-'));
  try {
    // The CA first, then a certificate for one agent.
    const pki = await createPki({ dir });
    const key = await createSharedKey();
    const [csr] = await createCsrs(1, key);
    const { certificatePem } = pki.issueClientCert(await pki.checkCsr(csr!), 'bench-agent');
    const secureContext = createSecureContext({
      ca: pki.caPem,
      key: key.pem,
      cert: certificatePem,
    });

    const server = fork(new URL(import.meta.url).pathname, ['server', dir]);
    const ask = () =>
      new Promise<{ cpuMs: number; full: number; resumed: number; port?: number }>((resolve) =>
        server.once('message', resolve),
      );
    const { port } = await ask();

    /** `count` connections, 32 at a time; each slot offers its last ticket when `resume`. */
    const run = async (count: number, resume: boolean) => {
      const tickets: (Buffer | undefined)[] = [];
      let next = 0;
      const one = (slot: number) =>
        new Promise<void>((resolve, reject) => {
          const s = connect({
            host: '127.0.0.1',
            port: port!,
            secureContext,
            servername: SERVER_NAME,
            ALPNProtocols: ['h2'],
            session: resume ? tickets[slot] : undefined,
          });
          s.on('session', (t: Buffer) => (tickets[slot] = t));
          s.on('error', reject);
          s.resume();
          s.on('end', () => resolve());
        });
      const slots = Array.from({ length: CONCURRENCY }, (_, slot) => slot);
      // Each slot's first connection gets its ticket (a full handshake, not counted).
      await Promise.all(slots.map(one));
      server.send('cpu');
      const before = await ask();
      const client0 = cpuMs();
      await Promise.all(
        slots.map(async (slot) => {
          while (next++ < count) await one(slot);
        }),
      );
      const client = cpuMs() - client0;
      server.send('cpu');
      const after = await ask();
      return {
        serverCpuMsPerConnection: +((after.cpuMs - before.cpuMs) / count).toFixed(3),
        clientCpuMsPerConnection: +(client / count).toFixed(3),
        resumed: after.resumed - before.resumed,
      };
    };
    const full = await run(N, false);
    const resumed = await run(N, true);
    server.kill();
    console.log(JSON.stringify({ tlsHandshake: { connections: N, full, resumed } }, null, 2));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
