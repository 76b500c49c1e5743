// Real nftables (run inside `unshare --net`): the boot loader (`bulkhead-agent --restore-only`,
// the built binary) puts back the state an agent persisted, with the same failsafe, after the
// table is gone (a reboot), and a denied datagram is denied again; nothing persisted is no
// failure, a state it cannot read is (exit 1, the kernel left as it was).
import { execFile } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { type NftDriver, Transaction } from '@bulkhead/nftables';
import { Mode } from '@bulkhead/proto';
import { pino } from 'pino';
import { afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { createDataplane } from './dataplane.js';
import { normalTable } from './delta.test-util.js';
import { fixtureFailsafe, fixtureUpdate } from './fixture.test-util.js';
import { sendUdp, useTestLink } from './link.test-util.js';

const DEV = 'bhboot1';
const MAIN = fileURLToPath(new URL('../dist/main.js', import.meta.url));
const logger = pino({ level: 'silent' });

/** Runs the loader; its exit status. */
function loader(stateDir: string): Promise<number> {
  return new Promise((resolve) => {
    execFile(
      process.execPath,
      [MAIN, '--restore-only', '--state-dir', stateDir, '--log-level', 'error'],
      (err) => resolve(err ? Number((err as { code?: number }).code ?? -1) : 0),
    );
  });
}

describe('boot loader (--restore-only) on real nftables', () => {
  let driver: NftDriver;
  let stateDir: string;
  const listed = async () =>
    normalTable(await driver.list({ list: { table: { family: 'inet', name: 'bulkhead' } } }));
  const dropTable = () =>
    driver
      .apply(new Transaction().delete({ table: { family: 'inet', name: 'bulkhead' } }))
      .catch(() => undefined);

  const link = useTestLink(DEV);
  beforeAll(() => {
    driver = link.driver();
  });
  beforeEach(async () => {
    stateDir = await mkdtemp(join(tmpdir(), 'bulkhead-boot-itest-'));
  });
  afterEach(async () => {
    await dropTable();
    await rm(stateDir, { recursive: true, force: true });
  });

  it('puts the persisted policy back after the table is gone, and a denied probe is denied', async () => {
    const dp = createDataplane({
      driver,
      stateDir,
      failsafe: fixtureFailsafe,
      logger,
      flowTable: { size: 1024, timeoutSeconds: 600 },
    });
    expect((await dp.apply(fixtureUpdate(Mode.MODE_ENFORCE, 4))).ok).toBe(true);
    await dp.persisted();
    const before = await listed();
    expect(await sendUdp('10.2.0.7', 9)).toBe('EPERM'); // the fixture's egress deny

    await dropTable(); // "reboot"
    expect(await sendUdp('10.2.0.7', 9)).toBeUndefined();
    expect(await loader(stateDir)).toBe(0);
    // The same table, failsafe rules and flow table size included.
    expect(await listed()).toEqual(before);
    expect(await sendUdp('10.2.0.7', 9)).toBe('EPERM');

    // Run again (a unit restarted): the kernel already holds it; still 0, nothing changed
    // (not even the flow element the probe recorded).
    const probed = await listed();
    expect(await loader(stateDir)).toBe(0);
    expect(await listed()).toEqual(probed);
  });

  it('exits 0 with nothing persisted, and 1 on a state it cannot read (kernel untouched)', async () => {
    expect(await loader(stateDir)).toBe(0);
    await expect(listed()).rejects.toThrow();

    const dp = createDataplane({ driver, stateDir, failsafe: fixtureFailsafe, logger });
    await dp.apply(fixtureUpdate(Mode.MODE_ENFORCE, 5));
    await dp.persisted();
    await dropTable();
    await writeFile(join(stateDir, 'dataplane.json'), '{not json');
    expect(await loader(stateDir)).toBe(1);
    await expect(listed()).rejects.toThrow();
  });
});
