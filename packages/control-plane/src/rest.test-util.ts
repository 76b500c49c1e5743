// A control plane on a temporary SQLite file with workloads and their agents, answered through
// `app.inject` (no socket), and flows ingested as real telemetry. For REST tests of the domains.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Labels } from '@bulkhead/policy';
import type { FastifyInstance, LightMyRequestResponse } from 'fastify';
import { expect } from 'vitest';
import { createApi } from './api.js';
import { createDomains, type Domains } from './domains.js';
import { createStreamRegistry, type StreamRegistry } from './fleet/streams.js';
import { createPki } from './pki.js';
import { createSqliteStores, type Stores } from './store/index.js';
import { silentLog } from './test-support.js';
import type { ReportedEvent } from './visibility/store.js';

export const DAY = 86_400_000;

export interface ObservedRow {
  direction: 'ingress' | 'egress';
  src: string;
  dst: string;
  port: number;
  protocol?: number;
  verdict?: 'allowed' | 'denied' | 'would-deny';
  ruleId?: string;
  connections?: number;
  daysAgo?: number;
}

export interface RestHarness {
  store: Stores;
  domains: Domains;
  streams: StreamRegistry;
  app: FastifyInstance;
  admin: string;
  call(
    method: 'GET' | 'PUT' | 'POST' | 'PATCH' | 'DELETE',
    url: string,
    body?: unknown,
    headers?: Record<string, string>,
  ): Promise<LightMyRequestResponse>;
  /**
   * A batch of flows (and events) `workload`'s agent reported, ingested like real telemetry:
   * written, then reported to visibility (SIEM, anomalies).
   */
  observe(workload: string, rows: ObservedRow[], events?: ReportedEvent[]): void;
  close(): Promise<void>;
}

/** Workloads `[name, address, labels]`, each in monitor mode with an agent `agent-<name>`. */
export async function createRestHarness(
  workloads: readonly (readonly [string, string, Labels])[],
  now?: () => Date,
): Promise<RestHarness> {
  const dir = mkdtempSync(join(tmpdir(), 'bh-rest-'));
  const store = createSqliteStores({ path: join(dir, 'bulkhead.db'), now });
  const pki = await createPki({ dir: join(dir, 'ca') });
  const streams = createStreamRegistry();
  const domains = createDomains({
    stores: store,
    pki,
    streams,
    log: silentLog,
    now,
  });
  const admin = domains.access.bootstrapAdminToken()!;
  const app = await createApi({ domains, log: silentLog });
  for (const [name, address, labels] of workloads) {
    store.policy.upsertWorkload({
      name,
      addresses: [address],
      labels: { ...labels },
      mode: { ingress: 'monitor', egress: 'monitor' },
    });
    store.fleet.createAgent({
      id: `agent-${name}`,
      workload: name,
      hostname: name,
      certSerial: name,
    });
  }
  let seq = 0;
  const clock = now ?? (() => new Date());
  return {
    store,
    domains,
    streams,
    app,
    admin,
    call: (method, url, body, headers = {}) =>
      app.inject({
        method,
        url,
        headers: { authorization: `Bearer ${admin}`, ...headers },
        ...(body === undefined ? {} : { payload: body as object }),
      }),
    observe(workload, rows, events = []) {
      const flows = rows.map((r) => {
        const at = new Date(clock().getTime() - (r.daysAgo ?? 0) * DAY).toISOString();
        return {
          direction: r.direction,
          src: r.src,
          dst: r.dst,
          port: r.port,
          protocol: r.protocol ?? 6,
          verdict: r.verdict ?? 'would-deny',
          ruleId: r.ruleId ?? '',
          connections: r.connections ?? 1,
          bytes: 100,
          firstSeen: at,
          lastSeen: at,
        };
      });
      const agentId = `agent-${workload}`;
      expect(store.fleet.addTelemetry(agentId, ++seq, { counters: [], flows, events })).toBe(true);
      domains.visibility.reported(agentId, workload, flows, events);
    },
    async close() {
      await app.close();
      store.close();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
