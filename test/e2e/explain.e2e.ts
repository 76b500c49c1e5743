// explain against the kernel: for a few probes between namespace hosts, the provisioned side
// of `bulkhead explain` says the connection passes exactly when a real connection succeeds.
import type { ExplainView } from '@bulkhead/api';
import { type Bulkhead, type Lab, startBulkhead } from '@bulkhead/lab';
import { useLab } from '@bulkhead/lab/vitest';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

describe('explain agrees with the kernel', () => {
  const getLab = useLab({ hosts: ['cp', 'web', 'db'] });
  let lab: Lab;
  let bh: Bulkhead;

  beforeAll(async () => {
    lab = getLab();
    bh = await startBulkhead(lab, 'cp', {
      web: { labels: { app: 'web' } },
      db: { labels: { app: 'db' } },
    });
    await lab.listen('db', 'tcp', 5432);
    await lab.listen('db', 'tcp', 6000);
    await lab.listen('web', 'tcp', 8080);
    // db takes pg from web and nothing else, enforced; web stays in monitor without a policy.
    await bh.api('PUT', '/v1/policies/db', {
      scope: { matchLabels: { app: 'db' } },
      ingress: [
        {
          action: 'allow',
          peers: [{ selector: { matchLabels: { app: 'web' } } }],
          services: [{ protocol: 'tcp', port: 5432 }],
        },
      ],
    });
    await bh.api('POST', '/v1/provision', { note: 'db from web' });
    await bh.api('PATCH', '/v1/workloads/db?provision=true&confirm=true', {
      mode: { ingress: 'enforce' },
    });
    await bh.waitInSync();
  });

  afterAll(async () => {
    await bh?.close();
  });

  const probes: Array<[string, string, number, boolean]> = [
    ['web', 'db', 5432, true], // allowed at db, web's egress only monitors
    ['web', 'db', 6000, false], // db's default deny, enforced
    ['db', 'web', 8080, true], // no policy at either end, both in monitor
  ];

  it.each(probes)('%s -> %s tcp/%i', async (from, to, port, passes) => {
    const out = await bh.cli(['-o', 'json', 'explain', from, to, `tcp/${port}`]);
    expect(out.code, out.stderr).toBe(0);
    const view = JSON.parse(out.stdout) as ExplainView;
    const pair = view.sides.find((s) => s.state === 'provisioned')!.pairs[0]!;
    expect(pair.verdict === 'denied').toBe(!passes);
    expect(await lab.connect(from, lab.hosts[to]!.ipv4, 'tcp', port)).toBe(passes);
  });
});
