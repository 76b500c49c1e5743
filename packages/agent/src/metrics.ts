import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { Direction, type RuleCounter, Verdict } from '@bulkhead/proto';
import { Counter, Gauge, Histogram, Registry } from 'prom-client';
import type { ApplyResult } from './dataplane.js';
import type { Drift } from './drift.js';
import type { FlowRead } from './flows.js';

/** The agent's Prometheus metrics, on a registry of its own (several agents per process in tests). */
export interface AgentMetrics {
  readonly registry: Registry;
  /** Add counter deltas read from the kernel. */
  observeCounters(counters: RuleCounter[]): void;
  /** `update`: the revision the apply was for. */
  observeApply(update: { revision: number }, result: ApplyResult): void;
  setConnected(connected: boolean): void;
  /** Flow records read from the kernel and how full each flow set was. */
  observeFlows(read: FlowRead): void;
  /** Flow keys dropped because the pending buffer was at its cap. */
  observeFlowsDropped(count: number): void;
  /** Where each scrape reads how many flow keys wait to be sent (the dataplane's buffer). */
  pendingFlowsFrom(size: () => number): void;
  /** A difference between kernel and desired table was found (and repaired). */
  observeTamper(drift: Drift): void;
  /** Serve GET /metrics; resolves with the bound address (port 0 picks one). */
  listen(host: string, port: number): Promise<AddressInfo>;
  close(): Promise<void>;
}

const DIRECTION: Record<number, string> = {
  [Direction.DIRECTION_INGRESS]: 'ingress',
  [Direction.DIRECTION_EGRESS]: 'egress',
};
const VERDICT: Record<number, string> = {
  [Verdict.VERDICT_ALLOWED]: 'allowed',
  [Verdict.VERDICT_DENIED]: 'denied',
  [Verdict.VERDICT_WOULD_DENY]: 'would_deny',
};

export function createAgentMetrics(): AgentMetrics {
  const registry = new Registry();
  const labelNames = ['rule_id', 'direction', 'verdict'] as const;
  const packets = new Counter({
    name: 'bulkhead_rule_packets_total',
    help: 'Packets decided by each rule; rule_id="default" for traffic no rule matched.',
    labelNames,
    registers: [registry],
  });
  const bytes = new Counter({
    name: 'bulkhead_rule_bytes_total',
    help: 'Bytes decided by each rule; rule_id="default" for traffic no rule matched.',
    labelNames,
    registers: [registry],
  });
  const revision = new Gauge({
    name: 'bulkhead_ruleset_revision',
    help: 'Policy revision of the rule set the kernel holds.',
    registers: [registry],
  });
  const applyDuration = new Histogram({
    name: 'bulkhead_apply_duration_seconds',
    help: 'Wall time of each nftables transaction.',
    buckets: [0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5],
    registers: [registry],
  });
  const applyFailures = new Counter({
    name: 'bulkhead_apply_failures_total',
    help: 'Rule sets that could not be applied (the previous rules stayed in place).',
    registers: [registry],
  });
  const connected = new Gauge({
    name: 'bulkhead_control_plane_connected',
    help: '1 while the Sync stream to the control plane is up.',
    registers: [registry],
  });
  connected.set(0);
  const flowsObserved = new Counter({
    name: 'bulkhead_flows_observed_total',
    help: 'Flow records read from the kernel flow sets (one per flow key and read).',
    labelNames: ['direction', 'verdict'] as const,
    registers: [registry],
  });
  const flowsDropped = new Counter({
    name: 'bulkhead_flows_dropped_total',
    help: 'Flow keys dropped because --max-pending-flows were already waiting to be sent.',
    registers: [registry],
  });
  let pendingFlows = () => 0;
  new Gauge({
    name: 'bulkhead_flows_pending',
    help: 'Flow keys read from the kernel and not yet sent: they grow while the control plane is away or slow to ack.',
    registers: [registry],
    collect() {
      this.set(pendingFlows());
    },
  });
  const flowTableFull = new Counter({
    name: 'bulkhead_flow_table_full_total',
    help: 'Reads that found a kernel flow set full (new flows went unrecorded).',
    labelNames: ['set'] as const,
    registers: [registry],
  });
  const flowTableEntries = new Gauge({
    name: 'bulkhead_flow_table_entries',
    help: 'Elements in each kernel flow set at the last read (before it was drained).',
    labelNames: ['set'] as const,
    registers: [registry],
  });

  const tampered = new Counter({
    name: 'bulkhead_dataplane_tampered_total',
    help: 'Checks that found table inet bulkhead changed by someone else (each was repaired).',
    labelNames: ['what'] as const,
    registers: [registry],
  });
  const applies = new Counter({
    name: 'bulkhead_applies_total',
    help: 'Successful applies by path: delta (only what changed) or full (whole table).',
    labelNames: ['path'] as const,
    registers: [registry],
  });

  let server: Server | undefined;

  return {
    registry,
    observeCounters(counters) {
      for (const c of counters) {
        const labels = {
          rule_id: c.ruleId,
          direction: DIRECTION[c.direction] ?? 'unspecified',
          verdict: VERDICT[c.verdict] ?? 'unspecified',
        };
        packets.inc(labels, c.packets);
        bytes.inc(labels, c.bytes);
      }
    },
    observeApply(rs, result) {
      if (result.micros > 0) applyDuration.observe(result.micros / 1e6);
      if (result.ok) {
        revision.set(rs.revision);
        applies.inc({ path: result.path ?? 'full' });
      } else applyFailures.inc();
    },
    setConnected(up) {
      connected.set(up ? 1 : 0);
    },
    observeFlows(read) {
      for (const f of read.records) {
        flowsObserved.inc({
          direction: DIRECTION[f.direction] ?? 'unspecified',
          verdict: VERDICT[f.verdict] ?? 'unspecified',
        });
      }
      for (const s of read.sets) {
        flowTableEntries.set({ set: s.set }, s.entries);
        if (s.size > 0 && s.entries >= s.size) flowTableFull.inc({ set: s.set });
      }
    },
    observeTamper(drift) {
      const what = drift.tableMissing
        ? 'table'
        : drift.chains.length
          ? 'chains'
          : drift.sets.length
            ? 'sets'
            : drift.elements.length
              ? 'elements'
              : 'counters';
      tampered.inc({ what });
    },
    observeFlowsDropped(count) {
      flowsDropped.inc(count);
    },
    pendingFlowsFrom(size) {
      pendingFlows = size;
    },
    listen(host, port) {
      const srv = createServer((req, res) => {
        if (req.method !== 'GET' || req.url?.split('?')[0] !== '/metrics') {
          res.writeHead(404).end('not found\n');
          return;
        }
        registry.metrics().then(
          (text) => res.writeHead(200, { 'content-type': registry.contentType }).end(text),
          () => res.writeHead(500).end('metrics unavailable\n'),
        );
      });
      server = srv;
      return new Promise((resolve, reject) => {
        srv.once('error', reject);
        srv.listen(port, host, () => resolve(srv.address() as AddressInfo));
      });
    },
    close() {
      const srv = server;
      server = undefined;
      if (!srv) return Promise.resolve();
      return new Promise((resolve) => {
        srv.close(() => resolve());
        srv.closeAllConnections();
      });
    },
  };
}
