// The control plane's Prometheus metrics: one registry per control plane (tests run several in
// one process), served as text by `GET /metrics` (api.ts). Must not hold state a domain needs:
// domains only increment what is here. Kept minimal on purpose; more metrics come with issues.
import { Counter, Registry } from 'prom-client';
import { REJECT_REASONS, type RejectReason } from './fleet/telemetry.js';

export interface Metrics {
  readonly registry: Registry;
  readonly telemetryRejected: Counter<'reason'>;
}

export function createMetrics(): Metrics {
  const registry = new Registry();
  const telemetryRejected = new Counter<'reason'>({
    name: 'bulkhead_telemetry_rejected_total',
    help: 'Telemetry records (counters, flows, events) agents sent that the control plane dropped, by reason.',
    labelNames: ['reason'],
    registers: [registry],
  });
  // Every reason is exported from the start, so a rate() alert sees 0 before the first attack.
  for (const reason of REJECT_REASONS satisfies readonly RejectReason[])
    telemetryRejected.inc({ reason }, 0);
  return { registry, telemetryRejected };
}
