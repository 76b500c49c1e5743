// A 200,000-entry rule set end to end on real nftables: an IP list of 200,000 /32s written
// through the API, compiled by the control plane, delivered over mTLS gRPC in chunks (no
// message over 1 MiB, which the control plane's encoder guarantees and its sync test checks) to
// a real agent process, applied to the kernel, and enforced on real TCP connections; then a
// delta on that list (one address out) is enforced too.

import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { type Bulkhead, type Lab, startBulkhead, until } from '@bulkhead/lab';
import { useLab } from '@bulkhead/lab/vitest';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

const ENTRIES = 200_000;
const PORT = 5432;
/** Compiling and applying 200k entries on a loaded 2-core box takes seconds: generous bounds. */
const SYNC_MS = 150_000;
const SLOW = { timeoutMs: 120_000 };

/** `count` /32s from 11.0.0.0, every other address so that no two merge, then `extra`. */
function cidrs(count: number, extra: string[]): string[] {
  const out = Array.from({ length: count }, (_, i) => {
    const n = 11 * 2 ** 24 + 2 * i;
    return `${n >>> 24}.${(n >>> 16) & 255}.${(n >>> 8) & 255}.${n & 255}/32`;
  });
  return [...out, ...extra.map((a) => `${a}/32`)];
}

describe('a 200,000-entry rule set, control plane to kernel', () => {
  const getLab = useLab({ hosts: ['cp', 'db', 'web', 'batch'] });
  let lab: Lab;
  let bh: Bulkhead;
  let db4: string;

  beforeAll(async () => {
    lab = getLab();
    db4 = lab.hosts.db!.ipv4;
    bh = await startBulkhead(lab, 'cp', {
      db: { labels: { app: 'shop', role: 'db' } },
      web: { labels: { app: 'shop', role: 'web' } },
      batch: { labels: { app: 'reports', role: 'batch' } },
    });
    await lab.listen('db', 'tcp', PORT);
  });
  afterAll(async () => {
    await bh?.close();
  });

  /** The db agent's log lines with message `msg` (pino JSON). */
  const dbAgentLog = <T>(msg: string): T[] =>
    readdirSync(lab.logDir)
      .filter((f) => /-db-.*main\.js/.test(f))
      .flatMap((f) => readFileSync(join(lab.logDir, f), 'utf8').split('\n'))
      .filter((l) => l.includes(`"msg":"${msg}"`))
      .map((l) => JSON.parse(l) as T);

  /** `confirm`: a provision that blocks a flow seen before needs it. */
  const provision = async (note: string, confirm = false) => {
    const prov = await bh.api<{ revision: number; changed: string[] }>(
      'POST',
      '/v1/provision',
      { note, confirm },
      SLOW,
    );
    await bh.waitInSync({ revision: prov.revision, timeoutMs: SYNC_MS });
    return prov;
  };

  it('is delivered in chunks, applied, and enforced', async () => {
    // web is one entry among 200,000; batch is in none.
    await bh.api(
      'PUT',
      '/v1/ip-lists/big',
      {
        cidrs: cidrs(ENTRIES - 1, [lab.hosts.web!.ipv4]),
      },
      SLOW,
    );
    await bh.api('PUT', '/v1/policies/db-from-big', {
      scope: { matchLabels: { app: 'shop', role: 'db' } },
      ingress: [
        {
          action: 'allow',
          peers: [{ ipList: 'big' }],
          services: [{ protocol: 'tcp', port: PORT }],
        },
      ],
    });
    await bh.api('PATCH', '/v1/workloads/db', { mode: { ingress: 'enforce' }, confirm: true });
    const prov = await provision('e2e: 200k entries');
    expect(prov.changed).toContain('db');

    // The agent received the update in several messages and merged them: 1.6 MB of packed
    // ranges (8 bytes each) in messages of at most 1 MiB.
    const received = dbAgentLog<{ chunks: number }>('policy update received');
    expect(Math.max(...received.map((r) => r.chunks))).toBeGreaterThan(1);

    // The kernel holds every entry: 200,000 addresses in the group's IPv4 set.
    const listed = await lab.exec('db', ['nft', '-j', 'list', 'table', 'inet', 'bulkhead'], {
      check: true,
    });
    const sets = (
      JSON.parse(listed.stdout) as { nftables: Array<Record<string, unknown>> }
    ).nftables.flatMap((o) => (o.set ? [o.set as { name: string; elem?: unknown[] }] : []));
    expect(Math.max(...sets.map((s) => s.elem?.length ?? 0))).toBe(ENTRIES);

    expect(await lab.connect('web', db4, 'tcp', PORT)).toBe(true);
    expect(await lab.connect('batch', db4, 'tcp', PORT, { timeoutMs: 500 })).toBe(false);
  });

  it('a delta on the 200,000-entry list (web out, batch in) is enforced', async () => {
    await bh.api(
      'PUT',
      '/v1/ip-lists/big',
      {
        cidrs: cidrs(ENTRIES - 1, [lab.hosts.batch!.ipv4]),
      },
      SLOW,
    );
    const prov = await provision('e2e: web out, batch in', true);
    // The agent acks before its log line reaches the file: wait for the line.
    let path: string | undefined;
    await until('the agent logged the apply', async () => {
      const applied = dbAgentLog<{ revision: number; path: string }>('policy update applied');
      path = applied.find((a) => a.revision === prov.revision)?.path;
      return path !== undefined;
    });
    expect(path).toBe('delta');
    await until('web refused, batch allowed', async () => {
      const batch = await lab.connect('batch', db4, 'tcp', PORT);
      const web = await lab.connect('web', db4, 'tcp', PORT, { timeoutMs: 500 });
      return batch && !web;
    });
  });
});
