import {
  AgentServiceClient,
  AgentServiceService,
  type SyncRequest,
  SyncResponse,
} from '@bulkhead/proto';
import { credentials, Server, ServerCredentials, type ServerDuplexStream } from '@grpc/grpc-js';
import { afterEach, describe, expect, it } from 'vitest';
import { encodeBodies, encodeGroup, frameUpdate, grpcFrameOf } from './rulesets/encode.js';
import { serializeSyncResponse, writePreFramed } from './sync-write.js';

const range = (i: number) => ({ family: 4 as const, from: BigInt(i * 4), to: BigInt(i * 4 + 1) });

describe('the Sync write path (pins grpc-js 1.14 internals)', () => {
  let server: Server | undefined;
  let client: AgentServiceClient | undefined;
  afterEach(async () => {
    client?.close();
    await new Promise<void>((resolve) =>
      server ? server.tryShutdown(() => resolve()) : resolve(),
    );
  });

  it('hands grpc-js the frame in front of a pre-framed message, and objects still encode', async () => {
    // Large enough that grpc-js's own copy would be a fresh allocation.
    const update = frameUpdate(
      { baseHash: '', hash: 'h', revision: 2, full: true },
      encodeBodies(
        undefined,
        encodeGroup(
          { id: 'list:a', created: true, added: Array.from({ length: 500 }, (_, i) => range(i)) },
          'text',
        ),
      ),
    );
    const serialized: Buffer[] = [];
    let installed: boolean | undefined;
    server = new Server();
    server.addService(
      { sync: { ...AgentServiceService.sync, responseSerialize: serializeSyncResponse } },
      {
        sync(call: ServerDuplexStream<SyncRequest, SyncResponse | Buffer>) {
          installed = writePreFramed(call);
          // What grpc-js's sendMessage gets from serializeMessage, after our hook.
          const inner = (call as unknown as { call: { serializeMessage(v: unknown): Buffer } })
            .call;
          const hooked = inner.serializeMessage;
          inner.serializeMessage = (v) => {
            const out = hooked(v);
            serialized.push(out);
            return out;
          };
          call.write({ welcome: { agentId: 'a', workloadId: 'w', telemetryAcks: false } });
          for (const m of update) call.write(m);
          call.end();
        },
      },
    );
    const port = await new Promise<number>((resolve, reject) =>
      server!.bindAsync('127.0.0.1:0', ServerCredentials.createInsecure(), (err, p) =>
        err ? reject(err) : resolve(p),
      ),
    );
    client = new AgentServiceClient(`127.0.0.1:${port}`, credentials.createInsecure());
    const stream = client.sync();
    const got: SyncResponse[] = [];
    await new Promise<void>((resolve, reject) => {
      stream.on('data', (m: SyncResponse) => got.push(m));
      stream.on('end', resolve);
      stream.on('error', reject);
    });

    expect(installed).toBe(true);
    expect(got).toEqual([
      SyncResponse.fromPartial({
        welcome: { agentId: 'a', workloadId: 'w', telemetryAcks: false },
      }),
      ...update.map((m) => SyncResponse.decode(m)),
    ]);
    expect(got[1]!.update!.groups[0]!.added).toHaveLength(500);
    // The update went out as its frame, not a copy of it.
    expect(serialized).toHaveLength(2);
    expect(serialized[1]).toBe(grpcFrameOf(update[0]!));
  });
});
