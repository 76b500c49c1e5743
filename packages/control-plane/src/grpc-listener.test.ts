// The agents' port opens before the server behind it is built: connections made meanwhile are
// accepted and wait, their handshakes start once it serves; a start that fails releases the port.
import { once } from 'node:events';
import { mkdtempSync, rmSync } from 'node:fs';
import { connect as connectTcp, createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connect, type TLSSocket } from 'node:tls';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { createControlPlane } from './control-plane.js';
import { bindAgentPort } from './grpc.js';
import type { TlsListener } from './grpc-listener.js';
import { createPki, type Pki } from './pki.js';
import { silentLog } from './test-support.js';

describe('agent port', () => {
  let dir: string;
  let pki: Pki;
  let listener: TlsListener | undefined;
  beforeEach(async () => {
    dir = mkdtempSync(join(tmpdir(), 'bh-listener-'));
    pki = await createPki({ dir: join(dir, 'ca') });
  });
  afterEach(async () => {
    await listener?.close();
    listener = undefined;
    rmSync(dir, { recursive: true, force: true });
  });

  it('accepts connections before it serves, and starts their handshakes once it does', async () => {
    listener = await bindAgentPort({ host: '127.0.0.1', port: 0, pki, log: silentLog });
    const clients = Array.from({ length: 3 }, () =>
      connect({
        host: '127.0.0.1',
        port: listener!.port,
        ca: pki.caPem,
        servername: 'bulkhead-control-plane',
        ALPNProtocols: ['h2'],
      }),
    );
    for (const c of clients) c.on('error', () => {}); // a reset at the end
    const secured = clients.map((c) => once(c, 'secureConnect'));
    let early = 0;
    for (const c of clients) c.on('secureConnect', () => early++);
    // Connected (not refused), and their ClientHellos sent; nobody answers them yet.
    await Promise.all(clients.map((c) => once(c, 'connect')));
    await new Promise((r) => setTimeout(r, 300));
    expect(early).toBe(0);

    const served: TLSSocket[] = [];
    let handshakes = 0;
    await new Promise<void>((all) =>
      listener!.serve({
        onSecure: (s) => served.push(s) === 3 && all(),
        onHandshake: () => handshakes++,
      }),
    );
    expect(handshakes).toBe(3);
    await Promise.all(secured);
    for (const c of clients) c.destroy();
  });

  it('is released when the start fails after it opened', async () => {
    // The REST API's port is taken: the control plane fails after the agents' port opened.
    const taken = createServer();
    await new Promise<void>((r) => taken.listen(0, '127.0.0.1', r));
    const { port } = taken.address() as { port: number };
    const cp = createControlPlane({
      dataDir: join(dir, 'cp'),
      apiListen: `127.0.0.1:${port}`,
      grpcListen: '127.0.0.1:0',
      logger: silentLog,
    });
    try {
      await expect(cp.start()).rejects.toThrow(/EADDRINUSE/);
      expect(cp.grpcPort).toBeGreaterThan(0);
      const probe = connectTcp({ host: '127.0.0.1', port: cp.grpcPort });
      const [err] = (await once(probe, 'error')) as [NodeJS.ErrnoException];
      expect(err.code).toBe('ECONNREFUSED');
    } finally {
      taken.close();
    }
  });
});
