// The web console in headless Chromium (Debian's chromium, driven by playwright-core) against a
// real control plane (REST API, domains and SQLite store; flows ingested as agents' telemetry):
// sign in with an API token, then each view shows what the API holds. A workload whose name and
// labels carry markup (as an attacker's host could report them) must show as text and run nothing.
// A missing chromium is a failure, never a skip: CI must not pass a check it did not run.
import { existsSync, mkdirSync } from 'node:fs';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import type { ImpactView } from '@bulkhead/api';
import { type Browser, chromium, type Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  createRestHarness,
  type RestHarness,
} from '../../packages/control-plane/src/rest.test-util.js';

const CHROMIUM = '/usr/bin/chromium';
const ARTIFACTS = join(import.meta.dirname, '..', '..', 'test-artifacts');
const XSS_NAME = '<img src=x onerror="window.__xss=1">';
const XSS_LABEL = '<script>window.__xss=2</script>';
const XSS_NOTE = '<img src=y onerror="window.__xss=3"> widen db';

describe('web console', () => {
  let h: RestHarness;
  let browser: Browser;
  let page: Page;
  let base: string;
  const cspViolations: string[] = [];

  beforeAll(async () => {
    if (!existsSync(CHROMIUM)) {
      throw new Error(`${CHROMIUM} is missing: apt-get install chromium (see scripts/setup.sh)`);
    }
    h = await createRestHarness([
      ['web-1', '10.0.1.1', { app: 'shop', role: 'web' }],
      ['db-1', '10.0.2.1', { app: 'shop', role: 'db' }],
      ['bastion', '10.0.3.1', { app: 'ops', role: 'bastion' }],
    ]);
    const ok = (res: { statusCode: number; body: string }) => {
      expect(res.statusCode, res.body).toBeLessThan(300);
    };
    ok(await h.call('PATCH', '/v1/workloads/db-1', { mode: { ingress: 'enforce' } }));
    const dbPolicy = (ports: number[]) => ({
      scope: { matchLabels: { app: 'shop', role: 'db' } },
      ingress: [
        {
          action: 'allow',
          peers: [{ selector: { matchLabels: { role: 'web' } } }],
          services: ports.map((port) => ({ protocol: 'tcp', port })),
        },
        { action: 'deny', peers: [{ selector: { matchLabels: { role: 'bastion' } } }] },
      ],
    });
    ok(await h.call('PUT', '/v1/policies/db', dbPolicy([5432])));
    ok(await h.call('POST', '/v1/provision', { note: 'shop: db' }));
    ok(await h.call('PUT', '/v1/policies/db', dbPolicy([5432, 6432])));
    ok(await h.call('POST', '/v1/provision', { note: XSS_NOTE }));
    // The draft: web may only reach the database, so its observed ssh to the bastion would stop.
    ok(
      await h.call('PUT', '/v1/policies/web', {
        scope: { matchLabels: { role: 'web' } },
        egress: [
          {
            action: 'allow',
            peers: [{ selector: { matchLabels: { role: 'db' } } }],
            services: [{ protocol: 'tcp', port: 5432 }],
          },
        ],
      }),
    );
    h.observe('web-1', [
      { direction: 'egress', src: '10.0.1.1', dst: '10.0.2.1', port: 5432, verdict: 'allowed' },
      { direction: 'egress', src: '10.0.1.1', dst: '10.0.3.1', port: 22, verdict: 'would-deny' },
      // Three days old: inside the default week, outside the last 24 hours.
      { direction: 'egress', src: '10.0.1.1', dst: '10.0.3.1', port: 9000, daysAgo: 3 },
    ]);
    h.observe('db-1', [
      { direction: 'ingress', src: '10.0.1.1', dst: '10.0.2.1', port: 5432, verdict: 'allowed' },
      { direction: 'ingress', src: '10.0.3.1', dst: '10.0.2.1', port: 22, verdict: 'denied' },
      { direction: 'ingress', src: '10.0.3.1', dst: '10.0.2.1', port: 80, verdict: 'denied' },
    ]);
    await h.app.listen({ host: '127.0.0.1', port: 0 });
    base = `http://127.0.0.1:${(h.app.server.address() as AddressInfo).port}`;
    browser = await chromium.launch({ executablePath: CHROMIUM });
    page = await browser.newPage({ viewport: { width: 1280, height: 1000 } });
    // The other tests start signed in (the sign-in test has a page of its own), each on its own,
    // with a viewer token: the console only reads.
    const viewer = await h.call('POST', '/v1/tokens', { name: 'alice', role: 'viewer' });
    ok(viewer);
    await page.addInitScript(
      `sessionStorage.setItem('bulkhead.apiToken', ${JSON.stringify(viewer.json().token)})`,
    );
    page.on('console', (m) => {
      if (/Content.Security.Policy/i.test(m.text())) cspViolations.push(m.text());
    });
  });

  afterAll(async () => {
    await browser?.close();
    await h?.close();
  });

  const view = async (id: string, selector: string) => {
    await page.goto(`${base}/ui/#/${id}`);
    await page.locator(selector).first().waitFor();
  };
  const rowText = (selector: string) => page.locator(`${selector} tbody tr`).allInnerTexts();

  it('asks for a token, refuses a wrong one and signs in with the CLI token', async () => {
    const fresh = await browser.newPage();
    await fresh.goto(`${base}/ui`);
    await fresh.locator('#login').waitFor();
    expect(await fresh.locator('nav').count()).toBe(0);
    await fresh.fill('input[name=token]', 'not-a-token');
    await fresh.click('#login button[type=submit]');
    await expect.poll(() => fresh.locator('#login .error').textContent()).toMatch(/token/i);
    expect(await fresh.evaluate('sessionStorage.length')).toBe(0);
    await fresh.fill('input[name=token]', h.admin);
    await fresh.click('#login button[type=submit]');
    await fresh.locator('#map').waitFor();
    expect(await fresh.evaluate('sessionStorage.length')).toBe(1);
    await fresh.click('nav button:text("Sign out")');
    await fresh.locator('#login').waitFor();
    expect(await fresh.evaluate('sessionStorage.length')).toBe(0);
    await fresh.close();
  });

  it('draws the map: groups by label, edges coloured by verdict, and keeps a screenshot', async () => {
    await view('map', '#map');
    const names = await page.locator('#map g.node text').allTextContents();
    expect(names).toEqual(expect.arrayContaining(['shop-web', 'shop-db', 'ops-bastion']));
    const edge = (from: string, to: string) => `#map line[data-from="${from}"][data-to="${to}"]`;
    const line = (from: string, to: string) => page.locator(edge(from, to));
    // As text: this file is type-checked without the DOM's types.
    const stroke = (from: string, to: string) =>
      page.evaluate(
        `getComputedStyle(document.querySelector(${JSON.stringify(edge(from, to))})).stroke`,
      );
    // The bastion's ssh and http to the database are refused: one red line for the pair.
    const denied = line('app=ops,role=bastion', 'app=shop,role=db');
    expect(await denied.getAttribute('data-policy')).toBe('denied');
    expect(await stroke('app=ops,role=bastion', 'app=shop,role=db')).toBe('rgb(198, 40, 40)');
    // web -> db is allowed by db's ingress, but web's egress has no policy yet.
    expect(await line('app=shop,role=web', 'app=shop,role=db').getAttribute('data-policy')).toBe(
      'not-covered',
    );
    expect(await stroke('app=shop,role=web', 'app=shop,role=db')).toBe('rgb(117, 117, 117)');
    expect(await page.locator('#map line').count()).toBe(3);
    // The table under the map lists every service of every pair.
    const edges = await rowText('#map-edges');
    expect(edges).toHaveLength(5);
    expect(
      edges.filter((r) => /ops-bastion\s+shop-db\s+tcp\/(22|80)\s+denied/.test(r)),
    ).toHaveLength(2);
    mkdirSync(ARTIFACTS, { recursive: true });
    const shot = join(ARTIFACTS, 'console-map.png');
    await page.locator('#map').screenshot({ path: shot });
    console.log(`console map screenshot: ${shot}`);

    // The time filter asks the API for the last 24 hours only.
    await page.selectOption('select[name=window]', '24h');
    await expect.poll(async () => (await rowText('#map-edges')).length).toBe(4);
    expect((await rowText('#map-edges')).join('\n')).not.toContain('tcp/9000');
    // The label filter keeps the edges touching the chosen groups: web's ssh in, db refusing it.
    await page.fill('input[name=labels]', 'role=bastion');
    await expect.poll(() => page.locator('#map line').count()).toBe(2);
    expect(await rowText('#map-edges')).toHaveLength(3);
  });

  it('shows flows with workloads, services and verdicts', async () => {
    await view('flows', '#flows tbody tr');
    const rows = await rowText('#flows');
    expect(rows.find((r) => r.includes('bastion (10.0.3.1)') && r.includes('db-1'))).toMatch(
      /tcp\/22\s+denied/,
    );
    expect(
      rows.some((r) =>
        /web-1 \(10\.0\.1\.1\)\s+db-1 \(10\.0\.2\.1\)\s+tcp\/5432\s+allowed/.test(r),
      ),
    ).toBe(true);
    await page.selectOption('select[name=verdict]', 'denied');
    await expect.poll(async () => (await rowText('#flows')).length).toBe(2);
  });

  it('lists agents and their health', async () => {
    await view('agents', '#agents tbody tr');
    const rows = await rowText('#agents');
    expect(rows.find((r) => r.startsWith('db-1'))).toMatch(/offline/);
    expect(rows).toHaveLength(3);
  });

  it('lists revisions and shows what one changed as a diff', async () => {
    await view('revisions', '#revisions tbody tr');
    expect(await rowText('#revisions')).toHaveLength(2);
    await page.locator('#revision-detail h4').first().waitFor();
    expect(await page.locator('#revision-detail h4').allTextContents()).toEqual([
      'changed Policy db (ingress)',
    ]);
    expect(await page.locator('#revision-detail .diff .add').allTextContents()).toEqual(
      expect.arrayContaining([expect.stringContaining('6432')]),
    );
    await page.click('#revisions button:text("#1")');
    await expect
      .poll(() => page.locator('#revision-detail h3').textContent())
      .toContain('Revision 1 by');
    expect(await page.locator('#revision-detail h4').allTextContents()).toContain(
      'added Policy db',
    );
  });

  it("shows the draft's changes and its impact report as the API computes it", async () => {
    const api: ImpactView = (await h.call('POST', '/v1/impact', {})).json();
    const s = api.summary;
    expect(api.groups.length).toBeGreaterThan(0);
    await view('impact', '#impact tbody tr');
    expect(await page.locator('#impact-summary').textContent()).toBe(
      `${s.newlyBlocked} newly blocked, ${s.newlyAllowed} newly allowed, ${s.stillWouldDeny} still would-deny, of ${s.flows} flows`,
    );
    const rows = await rowText('#impact');
    expect(rows).toHaveLength(api.groups.length);
    expect(rows.some((r) => r.includes('tcp/22') && r.includes('web'))).toBe(true);
    // The draft's changes come from their own requests (revisions, then the diff): wait for them.
    await expect.poll(() => page.locator('h4').allTextContents()).toContain('added Policy web');
  });

  it('renders markup from workload names, labels and notes as text, running none of it', async () => {
    // The API refuses such a name and label; put straight into the store (as a bug past the
    // validation would), the console must still show them as text.
    h.store.policy.upsertWorkload({
      name: XSS_NAME,
      addresses: ['10.0.4.1'],
      labels: { app: XSS_LABEL, role: 'x' },
      mode: { ingress: 'monitor', egress: 'monitor' },
    });
    h.store.fleet.createAgent({
      id: `agent-${XSS_NAME}`,
      workload: XSS_NAME,
      hostname: XSS_NAME,
      certSerial: 'xss',
    });
    h.observe(XSS_NAME, [
      { direction: 'egress', src: '10.0.4.1', dst: '10.0.2.1', port: 80, verdict: 'would-deny' },
    ]);
    await view('flows', '#flows tbody tr');
    expect((await rowText('#flows')).join('\n')).toContain(`${XSS_NAME} (10.0.4.1)`);
    await view('agents', '#agents tbody tr');
    expect((await rowText('#agents')).join('\n')).toContain(XSS_NAME);
    await view('map', '#map');
    expect(await page.locator('#map g.node text').allTextContents()).toContain(`${XSS_LABEL}-x`);
    await view('revisions', '#revisions tbody tr');
    expect((await rowText('#revisions')).join('\n')).toContain(XSS_NOTE);
    expect(await page.evaluate('window.__xss')).toBeUndefined();
    expect(await page.locator('#app img, #app script').count()).toBe(0);
    expect(cspViolations).toEqual([]);
  });
});
