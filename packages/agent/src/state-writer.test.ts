import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { QUIET_MS } from './heap.js';
import { createStateWriter, LARGE_STATE } from './state-writer.js';

describe('state writer', () => {
  let dir: string;
  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'bulkhead-writer-'));
  });
  afterEach(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  const writer = (bytes: number, clock: { t: number }) =>
    createStateWriter({
      policyFile: join(dir, 'policy.bin'),
      renderingFile: join(dir, 'dataplane.json'),
      logger: pino({ level: 'silent' }),
      now: () => clock.t,
      snapshot: () => ({
        bytes: new Uint8Array(bytes),
        rendering: {
          failsafe: { controlPlane: [], admin: undefined },
          flowTable: { size: 1, timeoutSeconds: 1 },
        },
      }),
    });

  it('calls for a release twice after a large state, each after a quiet interval', async () => {
    const clock = { t: 1_000 };
    const w = writer(LARGE_STATE, clock);
    w.schedule();
    await w.idle();
    expect((await readFile(join(dir, 'policy.bin'))).length).toBe(LARGE_STATE);
    const takes: boolean[] = [];
    for (const at of [
      QUIET_MS - 1,
      QUIET_MS,
      QUIET_MS + 1,
      2 * QUIET_MS,
      3 * QUIET_MS,
      9 * QUIET_MS,
    ]) {
      clock.t = 1_000 + at;
      takes.push(w.takeRelease());
    }
    expect(takes).toEqual([false, true, false, true, false, false]);
  });

  it('never calls for one after a small state', async () => {
    const clock = { t: 0 };
    const w = writer(LARGE_STATE - 1, clock);
    w.schedule();
    await w.idle();
    clock.t = 10 * QUIET_MS;
    expect(w.takeRelease()).toBe(false);
  });
});
