import type { Telemetry } from '@bulkhead/proto';
import { describe, expect, it } from 'vitest';
import { createTelemetryIngest, type IngestItem, type IngestResult } from './ingest.js';

/** A message of `flows` flows (cost flows + 1); `seq` tells it apart. */
const telemetry = (seq: number, flows: number): Telemetry => ({
  seq,
  timeUnixMs: 0,
  appliedHash: '',
  counters: [],
  flows: Array.from({ length: flows }, () => ({}) as NonNullable<Telemetry['flows']>[number]),
  events: [],
});

/**
 * An agent's stream as grpc-js delivers it: messages arrive one after another while it is read,
 * none while it is paused.
 */
function agentStream(agentId: string, ingest: ReturnType<typeof createTelemetryIngest>) {
  const pending: Telemetry[] = [];
  const settled: Promise<boolean>[] = [];
  let paused = false;
  let pauses = 0;
  const stream = {
    pause() {
      paused = true;
      pauses++;
    },
    resume() {
      paused = false;
      deliver();
    },
  };
  function deliver() {
    while (!paused && pending.length > 0) {
      settled.push(ingest.offer(stream, { agentId, telemetry: pending.shift()! }));
    }
  }
  return {
    send(...ts: Telemetry[]) {
      pending.push(...ts);
      deliver();
    },
    get pauses() {
      return pauses;
    },
    get unread() {
      return pending.length;
    },
    settled: () => Promise.all(settled),
  };
}

describe('telemetry ingest queue', () => {
  it('under overload never holds more than its capacity, pauses senders, loses nothing', async () => {
    const ids = ['a', 'b', 'c', 'd', 'e'];
    const written: IngestItem[] = [];
    let maxQueued = 0;
    const ingest = createTelemetryIngest({
      capacity: 100,
      sliceRecords: 40,
      write(items) {
        maxQueued = Math.max(maxQueued, ingest.queued);
        written.push(...items);
        return items.map(() => ({ added: true }));
      },
    });
    const agents = ids.map((id) => agentStream(id, ingest));
    // 5 agents x 20 messages x 30 records offered at once: 30x the capacity.
    for (const a of agents) {
      a.send(...Array.from({ length: 20 }, (_, i) => telemetry(i + 1, 29)));
      maxQueued = Math.max(maxQueued, ingest.queued);
    }
    // One message per stream taken, the rest left unread; three fit, two wait for room.
    expect(agents.map((a) => a.unread)).toEqual([19, 19, 19, 19, 19]);
    expect([ingest.queued, ingest.waiting]).toEqual([90, 2]);

    await ingest.idle();
    for (const a of agents) expect(await a.settled()).toEqual(Array(20).fill(true));
    expect(maxQueued).toBeLessThanOrEqual(100);
    expect(agents.every((a) => a.pauses === 20 && a.unread === 0)).toBe(true);
    expect(ingest.queued).toBe(0);
    // Each message written once, each agent's in the order it sent them.
    for (const id of ids) {
      const seqs = written.filter((w) => w.agentId === id).map((w) => w.telemetry.seq);
      expect(seqs).toEqual(Array.from({ length: 20 }, (_, i) => i + 1));
    }
  });

  it('writes several messages per slice, at least one, and yields between slices', async () => {
    const slices: number[][] = [];
    const ingest = createTelemetryIngest({
      capacity: 1000,
      sliceRecords: 25,
      write(items) {
        slices.push(items.map((i) => i.telemetry.seq));
        return items.map(() => ({ added: true }));
      },
    });
    [9, 9, 9, 99, 0].forEach((flows, i) => {
      agentStream(`agent-${i}`, ingest).send(telemetry(i + 1, flows));
    });
    expect(slices).toEqual([]);
    await ingest.idle();
    expect(slices).toEqual([[1, 2], [3], [4], [5]]);
  });

  it('sizes slices to take about sliceMs, from what the last records cost', async () => {
    let clock = 0;
    const slices: number[] = [];
    const ingest = createTelemetryIngest({
      capacity: 1000,
      sliceRecords: 100,
      sliceMs: 10,
      now: () => clock,
      write(items) {
        // Each record (a message without flows) costs 1 ms.
        clock += items.length;
        slices.push(items.length);
        return items.map(() => ({ added: true }));
      },
    });
    for (let i = 0; i < 400; i++) agentStream(`agent-${i}`, ingest).send(telemetry(i + 1, 0));
    await ingest.idle();
    expect(slices.reduce((a, b) => a + b)).toBe(400);
    // The first slice knows nothing yet and takes the most; then they shrink toward 10 records.
    expect(slices[0]).toBe(100);
    expect(slices[1]).toBeLessThan(50);
    expect(slices.slice(10, -1).every((n) => n >= 10 && n <= 11)).toBe(true);
  });

  it('takes a message larger than its capacity once the queue is empty', async () => {
    const ingest = createTelemetryIngest({
      capacity: 10,
      write: (items) => items.map(() => ({ added: true })),
    });
    const [a, b] = ['a', 'b'].map((id) => agentStream(id, ingest));
    a!.send(telemetry(1, 5));
    b!.send(telemetry(2, 50));
    expect([ingest.queued, ingest.waiting]).toEqual([6, 1]);
    await ingest.idle();
    expect(await b!.settled()).toEqual([true]);
  });

  it('settles each message with its own result: counted, already counted, refused', async () => {
    const refused = new Error('agent is revoked');
    const results: IngestResult[] = [{ added: true }, { added: false }, { error: refused }];
    const ingest = createTelemetryIngest({ write: () => results });
    const stream = { pause() {}, resume() {} };
    const offered = [1, 2, 3].map((seq) =>
      ingest.offer(stream, { agentId: 'a', telemetry: telemetry(seq, 1) }).then(
        (added) => ({ added }),
        (error: unknown) => ({ error }),
      ),
    );
    expect(await Promise.all(offered)).toEqual(results);
  });
});
