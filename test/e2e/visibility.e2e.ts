// Visibility on real nftables: hosts talk in monitor mode, the kernel records the flows, the
// control plane turns them into flows, a dependency map and a recommendation that allows
// exactly what was observed. Enforcing the recommendation keeps that traffic working and
// refuses a new, unobserved connection, and the refusal reaches a syslog receiver.
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { FlowView, MapEdge, Recommendation } from '@bulkhead/api';
import { type Bulkhead, LAB_SCRIPTS, type Lab, startBulkhead, until } from '@bulkhead/lab';
import { useLab } from '@bulkhead/lab/vitest';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

const SYSLOG_PORT = 5514;

describe('visibility: flows, map, recommendations, SIEM', () => {
  // lic is a license server without an agent: known to Bulkhead only as an IP list.
  const getLab = useLab({ hosts: ['cp', 'web', 'db', 'batch', 'lic'] });
  let lab: Lab;
  let bh: Bulkhead;
  let sinkDir: string;
  let syslogFile: string;
  let db4: string;
  let lic4: string;
  const syslog = () => {
    try {
      return readFileSync(syslogFile, 'utf8').split('\n').filter(Boolean);
    } catch {
      return [];
    }
  };

  beforeAll(async () => {
    lab = getLab();
    db4 = lab.hosts.db!.ipv4;
    lic4 = lab.hosts.lic!.ipv4;
    sinkDir = mkdtempSync(join(tmpdir(), 'bulkhead-syslog-'));
    syslogFile = join(sinkDir, 'syslog.log');
    const sink = lab.spawn('cp', [
      process.execPath,
      join(LAB_SCRIPTS, 'udp-sink.mjs'),
      String(SYSLOG_PORT),
      syslogFile,
    ]);
    await sink.waitForLog(/listening/);
    bh = await startBulkhead(
      lab,
      'cp',
      {
        web: { labels: { app: 'shop', role: 'web' } },
        db: { labels: { app: 'shop', role: 'db' } },
        batch: { labels: { app: 'reports', role: 'batch' } },
      },
      {
        controlPlaneArgs: [
          '--siem',
          `syslog+udp://127.0.0.1:${SYSLOG_PORT}?format=json`,
          '--siem',
          `file://${join(sinkDir, 'events.jsonl')}`,
        ],
      },
    );
    await bh.api('PUT', '/v1/ip-lists/license-servers', {
      name: 'license-servers',
      cidrs: [`${lic4}/32`],
    });
    await bh.api('POST', '/v1/provision', { note: 'e2e: ip lists' });
    await bh.waitInSync();
    await lab.listen('db', 'tcp', 5432);
    await lab.listen('db', 'tcp', 6432);
    await lab.listen('db', 'udp', 5353);
    await lab.listen('lic', 'tcp', 27000);
  });

  afterAll(async () => {
    await bh?.close();
    if (sinkDir) rmSync(sinkDir, { recursive: true, force: true });
  });

  it('records the flows of hosts in monitor mode with workloads, labels, ports and verdicts', async () => {
    expect(await lab.connect('web', db4, 'tcp', 5432)).toBe(true);
    expect(await lab.connect('web', db4, 'udp', 5353)).toBe(true);
    expect(await lab.connect('batch', db4, 'tcp', 5432)).toBe(true); // the weekly batch job
    expect(await lab.connect('db', lic4, 'tcp', 27000)).toBe(true); // the forgotten dependency

    const flows = await until('flows from both ends', async () => {
      const { flows } = await bh.api<{ flows: FlowView[] }>('GET', '/v1/flows?workload=db');
      const has = (f: (x: FlowView) => boolean) => flows.some(f);
      return has((f) => f.src.workload === 'web' && f.port === 5432 && f.direction === 'ingress') &&
        has((f) => f.src.workload === 'web' && f.port === 5353 && f.protocol === 'udp') &&
        has((f) => f.src.workload === 'batch' && f.port === 5432) &&
        has((f) => f.dst.address === lic4 && f.port === 27000)
        ? flows
        : undefined;
    });
    const web = flows.find(
      (f) => f.src.workload === 'web' && f.port === 5432 && f.reportedBy === 'db',
    )!;
    expect(web.dst.workload).toBe('db');
    expect(web.src.labels).toEqual({ app: 'shop', role: 'web' });
    expect(web.src.address).toBe(lab.hosts.web!.ipv4);
    expect(web.protocol).toBe('tcp');
    expect(web.verdict).toBe('would-deny');
    expect(web.ruleId).toBe('default');
    expect(web.connections).toBeGreaterThanOrEqual(1);
    const lic = flows.find((f) => f.dst.address === lic4)!;
    expect(lic.dst.workload).toBeUndefined();
    expect(lic.dst.ipLists).toEqual(['license-servers']);
    expect(lic.direction).toBe('egress');

    const tcpOnly = await bh.api<{ flows: FlowView[] }>(
      'GET',
      '/v1/flows?workload=db&protocol=udp',
    );
    expect(tcpOnly.flows.length).toBeGreaterThan(0);
    expect(tcpOnly.flows.every((f) => f.protocol === 'udp')).toBe(true);
    // Real agents speak for their own hosts only: the control plane rejected none of it.
    const events = await bh.api<{ code: string; message: string }[]>('GET', '/v1/events');
    expect(events.filter((e) => e.code === 'TELEMETRY_REJECTED')).toEqual([]);
  });

  it('draws the dependency map at label granularity', async () => {
    const map = await bh.api<{ nodes: { id: string }[]; edges: MapEdge[] }>(
      'GET',
      '/v1/map?groupBy=app,role',
    );
    const edge = (from: string, to: string, port: number) =>
      map.edges.find((e) => e.from === from && e.to === to && e.port === port);
    expect(edge('app=shop,role=web', 'app=shop,role=db', 5432)?.policy).toBe('not-covered');
    expect(edge('app=reports,role=batch', 'app=shop,role=db', 5432)).toBeDefined();
    expect(edge('app=shop,role=db', 'ip-list:license-servers', 27000)).toBeDefined();

    const dot = await bh.cli(['map', '--group-by', 'app,role', '--dot']);
    expect(dot.code, dot.stderr).toBe(0);
    expect(dot.stdout).toMatch(/^digraph/);
    expect(dot.stdout).toContain('tcp/27000');
  });

  it('recommends policy that covers every observed flow; enforcing it refuses only the new', async () => {
    const rec = await bh.api<Recommendation>('POST', '/v1/recommendations', {
      scope: { matchLabels: { app: 'shop', role: 'db' } },
    });
    expect(rec.coverage.allowedByCurrent).toBe(0);
    expect(rec.coverage.observed).toBeGreaterThanOrEqual(4);
    expect(rec.coverage.allowedWithProposal).toBe(rec.coverage.observed);
    expect(rec.uncovered).toEqual([]);

    // The CLI prints the same proposal as files that `apply` takes.
    const yaml = await bh.cli(['recommend', '--scope', 'app=shop,role=db']);
    expect(yaml.code, yaml.stderr).toBe(0);
    expect(yaml.stdout).toContain('kind: Policy');
    const file = join(sinkDir, 'recommended.yaml');
    writeFileSync(file, yaml.stdout);
    const applied = await bh.cli(['apply', '-f', file]);
    expect(applied.code, applied.stderr).toBe(0);
    const names = (await bh.api<{ name: string }[]>('GET', '/v1/policies')).map((p) => p.name);
    expect(names).toEqual(expect.arrayContaining(rec.policies.map((p) => p.name)));
    await bh.api('POST', '/v1/provision', { note: 'e2e: recommended policy for the database' });
    await bh.api('PATCH', '/v1/workloads/db?provision=true', {
      mode: { ingress: 'enforce', egress: 'enforce' },
    });
    await bh.waitInSync();

    expect(await lab.connect('web', db4, 'tcp', 5432)).toBe(true);
    expect(await lab.connect('web', db4, 'udp', 5353)).toBe(true);
    expect(await lab.connect('batch', db4, 'tcp', 5432)).toBe(true);
    expect(await lab.connect('db', lic4, 'tcp', 27000)).toBe(true);
    // Never observed: refused.
    expect(await lab.connect('web', db4, 'tcp', 6432)).toBe(false);
    expect(await lab.connect('batch', db4, 'udp', 5353)).toBe(false);
  });

  it('exports the denied connection and the audit trail to the SIEM as RFC 5424', async () => {
    const lines = await until(
      'denied flow in syslog',
      async () => {
        const l = syslog();
        return l.some((x) => x.includes('FLOW_DENIED')) ? l : undefined;
      },
      { timeoutMs: 40_000 },
    );
    const denied = lines.find((x) => x.includes('FLOW_DENIED'))!;
    // <PRI>1 TIMESTAMP HOSTNAME APP PROCID MSGID [SD] MSG
    const m = denied.match(/^<(\d+)>1 (\S+) (\S+) bulkhead (\S+) FLOW_DENIED (\[.*?\]|-) (.*)$/);
    expect(m, denied).not.toBeNull();
    expect(Number.isNaN(Date.parse(m![2]!))).toBe(false);
    const event = JSON.parse(m![6]!) as Record<string, unknown>;
    expect(event.dst).toBe(db4);
    expect(event.verdict).toBe('denied');
    expect(lines.some((x) => / AUDIT /.test(x) && x.includes('provision'))).toBe(true);
    const file = readFileSync(join(sinkDir, 'events.jsonl'), 'utf8').trim().split('\n');
    expect(file.map((l) => JSON.parse(l) as { kind: string }).some((e) => e.kind === 'audit')).toBe(
      true,
    );
  });
});
