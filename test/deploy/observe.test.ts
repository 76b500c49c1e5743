import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { DEPLOY, REPO, run } from './tools.js';

const RULES = join(DEPLOY, 'prometheus', 'bulkhead-alerts.yml');
const RULE_TESTS = join(DEPLOY, 'prometheus', 'bulkhead-alerts.test.yml');
const DASHBOARD = join(DEPLOY, 'grafana', 'bulkhead-dashboard.json');

// Control-plane metrics that are being added on another branch at the time of writing; the
// alert and dashboard name them already. Every other name must be defined in the source.
const CONTROL_PLANE_METRICS = ['bulkhead_telemetry_rejected_total'];

/** Metric names registered anywhere in packages/*\/src (prom-client `name: '...'`). */
function exportedMetrics(): Set<string> {
  const names = new Set(CONTROL_PLANE_METRICS);
  const root = join(REPO, 'packages');
  for (const pkg of readdirSync(root)) {
    let files: string[];
    try {
      files = readdirSync(join(root, pkg, 'src'), { recursive: true }) as string[];
    } catch {
      continue;
    }
    for (const f of files.filter(
      (f) => f.endsWith('.ts') && !/\.(i?test|test-util)\.ts$/.test(f),
    )) {
      const text = readFileSync(join(root, pkg, 'src', f), 'utf8');
      for (const m of text.matchAll(/name: '(bulkhead_[a-z0-9_]+)'/g)) names.add(m[1]!);
    }
  }
  return names;
}

function unknownMetrics(text: string, known: Set<string>): string[] {
  const used = new Set(text.match(/\bbulkhead_[a-z0-9_]+/g) ?? []);
  return [...used].filter(
    (n) => !known.has(n) && !known.has(n.replace(/_(bucket|sum|count)$/, '')),
  );
}

interface Target {
  refId: string;
  expr: string;
}
interface Panel {
  id: number;
  type: string;
  title: string;
  datasource: { type: string; uid: string };
  gridPos: { x: number; y: number; w: number; h: number };
  targets: Target[];
}

describe('Prometheus alert rules', () => {
  it('pass promtool check rules', () => {
    const r = run('promtool', ['check', 'rules', RULES]);
    expect(r.code, r.stdout + r.stderr).toBe(0);
  });

  it('fire on the series they are for and stay quiet otherwise (promtool test rules)', () => {
    const r = run('promtool', ['test', 'rules', RULE_TESTS]);
    expect(r.code, r.stdout + r.stderr).toBe(0);
  });

  it('cover offline, disconnected, apply failures, deny spike, tamper and slow propagation', () => {
    const alerts = [...readFileSync(RULES, 'utf8').matchAll(/- alert: (\w+)/g)].map((m) => m[1]);
    expect(alerts).toEqual(
      expect.arrayContaining([
        'BulkheadAgentDown',
        'BulkheadAgentDisconnected',
        'BulkheadApplyFailures',
        'BulkheadDenySpike',
        'BulkheadDataplaneTampered',
        'BulkheadApplySlow',
        'BulkheadPropagationSlow',
      ]),
    );
  });

  it('name only metrics the agent and control plane export', () => {
    expect(unknownMetrics(readFileSync(RULES, 'utf8'), exportedMetrics())).toEqual([]);
  });
});

describe('Grafana dashboard', () => {
  const dash = JSON.parse(readFileSync(DASHBOARD, 'utf8')) as {
    uid: string;
    title: string;
    schemaVersion: number;
    templating: { list: { name: string; type: string }[] };
    panels: Panel[];
  };
  const dir = mkdtempSync(join(tmpdir(), 'bulkhead-dashboard-'));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it('has an id, a title and the datasource and host variables', () => {
    expect(dash.uid).toMatch(/^[a-z0-9-]{1,40}$/);
    expect(dash.title).toBeTruthy();
    expect(dash.schemaVersion).toBeGreaterThanOrEqual(30);
    expect(dash.templating.list.map((v) => `${v.name}:${v.type}`)).toEqual([
      'datasource:datasource',
      'instance:query',
    ]);
  });

  it('lays out panels with unique ids on the 24-column grid, each with a query', () => {
    const ids = dash.panels.map((p) => p.id);
    expect(new Set(ids).size).toBe(ids.length);
    for (const p of dash.panels) {
      expect(['stat', 'timeseries', 'table'], p.title).toContain(p.type);
      // biome-ignore lint/suspicious/noTemplateCurlyInString: Grafana's variable, not JS's
      expect(p.datasource.uid, p.title).toBe('${datasource}');
      const { x, y, w, h } = p.gridPos;
      for (const n of [x, y, w, h]) expect(Number.isInteger(n) && n >= 0, p.title).toBe(true);
      expect(x + w, p.title).toBeLessThanOrEqual(24);
      expect(p.targets.length, p.title).toBeGreaterThan(0);
      expect(new Set(p.targets.map((t) => t.refId)).size, p.title).toBe(p.targets.length);
    }
  });

  it("every panel's query parses (promtool check rules on a throwaway rules file)", () => {
    // Grafana's own variables are substituted as Grafana would before sending the query.
    const rules = dash.panels.flatMap((p) =>
      p.targets.map((t) => ({
        record: `dashboard:panel_${p.id}_${t.refId}`,
        expr: t.expr.replaceAll('$__rate_interval', '5m').replaceAll('$instance', '.*'),
      })),
    );
    const file = join(dir, 'dashboard-rules.yml');
    // JSON is YAML: promtool reads it as it is.
    writeFileSync(file, JSON.stringify({ groups: [{ name: 'dashboard', rules }] }));
    const r = run('promtool', ['check', 'rules', file]);
    expect(r.code, r.stdout + r.stderr).toBe(0);
    expect(r.stdout).toContain(`SUCCESS: ${rules.length} rules found`);
  });

  it('names only metrics the agent and control plane export', () => {
    expect(unknownMetrics(readFileSync(DASHBOARD, 'utf8'), exportedMetrics())).toEqual([]);
  });
});
