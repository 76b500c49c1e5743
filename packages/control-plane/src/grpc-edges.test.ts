// The gRPC edge under hostile input: the same key rules as REST.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { AgentServiceClient, type EnrollResponse } from '@bulkhead/proto';
import { credentials, status } from '@grpc/grpc-js';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { type ControlPlane, createControlPlane } from './control-plane.js';
import { makeCsr, restClient, silentLog } from './test-support.js';

describe('gRPC edge', () => {
  let dir: string;
  let cp: ControlPlane;
  const clients: AgentServiceClient[] = [];

  beforeEach(async () => {
    dir = mkdtempSync(join(tmpdir(), 'bh-gedge-'));
    cp = createControlPlane({
      dataDir: dir,
      apiListen: '127.0.0.1:0',
      grpcListen: '127.0.0.1:0',
      logger: silentLog,
    });
    await cp.start();
  });
  afterEach(async () => {
    for (const c of clients.splice(0)) c.close();
    await cp.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  const enroll = async (labels: Record<string, string>) => {
    const { token } = (await restClient(cp)('POST', '/v1/enrollment-tokens', {})).json;
    const { csrPem } = await makeCsr('h-1');
    const c = new AgentServiceClient(
      `127.0.0.1:${cp.grpcPort}`,
      credentials.createSsl(Buffer.from(cp.caPem)),
    );
    clients.push(c);
    return new Promise<EnrollResponse>((resolve, reject) =>
      c.enroll(
        {
          bootstrapToken: token,
          hostname: 'h-1',
          addresses: [],
          labels,
          csrPem,
          agentVersion: 't',
        },
        (err, res) => (err ? reject(err) : resolve(res)),
      ),
    );
  };

  it.each(['__proto__', 'constructor'])('refuses an Enroll label key %s naming it', async (key) => {
    // An own property named __proto__, as a decoder of the wire map would see it.
    const labels = JSON.parse(`{"app":"web","${key}":"x"}`);
    await expect(enroll(labels)).rejects.toMatchObject({
      code: status.INVALID_ARGUMENT,
      details: expect.stringContaining(`labels.${key}`),
    });
    expect((await restClient(cp)('GET', '/v1/workloads')).json).toEqual([]);
  });
});
