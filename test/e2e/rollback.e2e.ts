// Labels and modes are revisioned (issue 11 section 1), proven on real nftables: enforce db and
// take web's label away through the CLI's one-change provisions, then roll back to each earlier
// revision and probe that the kernel is where it was at that revision.
import type { FlowView } from '@bulkhead/api';
import { type Bulkhead, type Lab, startBulkhead, until } from '@bulkhead/lab';
import { useLab } from '@bulkhead/lab/vitest';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

describe('rollback restores policy, labels and modes on the hosts', () => {
  const getLab = useLab({ hosts: ['cp', 'web', 'db'] });
  let lab: Lab;
  let bh: Bulkhead;
  let db4: string;
  const revisions: Record<'monitor' | 'enforced', number> = { monitor: 0, enforced: 0 };

  beforeAll(async () => {
    lab = getLab();
    db4 = lab.hosts.db!.ipv4;
    bh = await startBulkhead(lab, 'cp', {
      web: { labels: { app: 'web' } },
      db: { labels: { app: 'db' } },
    });
    await lab.listen('db', 'tcp', 5432);
    await lab.listen('db', 'tcp', 6000);
  });
  afterAll(async () => {
    await bh?.close();
  });

  const cli = async (args: string[]) => {
    const r = await bh.cli(args);
    expect(r.code, r.stdout + r.stderr).toBe(0);
    return r.stdout;
  };
  const revisionOf = (stdout: string) => Number(/revision (\d+)/.exec(stdout)?.[1]);
  const probe = async () => ({
    pg: await lab.connect('web', db4, 'tcp', 5432),
    other: await lab.connect('web', db4, 'tcp', 6000),
  });

  it('monitor revision: db allows pg from app=web, everything still passes', async () => {
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
    revisions.monitor = revisionOf(await cli(['provision', '--note', 'db: pg from web']));
    await bh.waitInSync();
    expect(await probe()).toEqual({ pg: true, other: true });
    await until('both flows observed', async () => {
      const { flows } = await bh.api<{ flows: FlowView[] }>('GET', '/v1/flows?workload=db');
      return [5432, 6000].every((p) => flows.some((f) => f.port === p));
    });
  });

  it('a drafted mode changes nothing; provisioned it is gated, then enforced', async () => {
    await cli(['mode', 'db', '--ingress', 'enforce']);
    await bh.waitInSync();
    expect((await probe()).other).toBe(true);
    const refused = await bh.cli(['mode', 'db', '--ingress', 'enforce', '--provision']);
    expect(refused.code, refused.stdout + refused.stderr).toBe(4);
    revisions.enforced = revisionOf(
      await cli(['mode', 'db', '--ingress', 'enforce', '--provision', '--confirm']),
    );
    await bh.waitInSync();
    expect(await probe()).toEqual({ pg: true, other: false });
  });

  it("removing web's label cuts pg; rolled back, the label and the connection return", async () => {
    await cli(['label', 'web', 'app-', '--provision', '--confirm']);
    await bh.waitInSync();
    expect(await probe()).toEqual({ pg: false, other: false });

    await cli(['rollback', String(revisions.enforced), '--note', 'web needs its label']);
    await bh.waitInSync();
    expect(await probe()).toEqual({ pg: true, other: false });
    const web = await bh.api<{ labels: Record<string, string> }>('GET', '/v1/workloads/web');
    expect(web.labels).toEqual({ app: 'web' });
  });

  it('rolled back to the monitor revision, the denied connection works again', async () => {
    await cli(['rollback', String(revisions.monitor), '--note', 'back to monitor', '--confirm']);
    await bh.waitInSync();
    expect(await probe()).toEqual({ pg: true, other: true });
    const db = await bh.api<{ mode: { ingress: string } }>('GET', '/v1/workloads/db');
    expect(db.mode.ingress).toBe('monitor');
  });
});
