// Offline agents: an agent without an open Sync stream for `offlineAfterMs` is offline (gRPC
// keepalives end a black-holed stream, so a silent link counts as no stream). Each change
// raises an event (audit log, agent events, SIEM) and, with `withdraw`, a workload whose agents
// are all offline has its addresses withheld from peers' rule sets until one is back: through
// the publisher's workload-change path, never by editing the workload. Holds its state in the
// process only: after a restart every agent has `offlineAfterMs` to come back.
import type { Workload } from '@bulkhead/policy';
import type { Logger } from 'pino';
import type { AuditLog } from '../access/store.js';
import type { RuleSetPublisher } from '../rulesets/publisher.js';
import type { Transactor } from '../store/database.js';
import type { ReportedEvent } from '../visibility/store.js';
import type { AgentRecord } from './store.js';

export const DEFAULT_OFFLINE_AFTER_MS = 120_000;

export type LivenessChange = 'offline' | 'online';

export interface LivenessDeps {
  /** Every enrolled agent (revoked ones are skipped). */
  agents(): Pick<AgentRecord, 'id' | 'workload' | 'revoked'>[];
  isConnected(agentId: string): boolean;
  offlineAfterMs: number;
  /** Raises the event of a change (audit, agent events, SIEM); `sinceMs` = last contact. */
  changed(agent: { id: string; workload: string }, change: LivenessChange, sinceMs: number): void;
  /** With `withdraw`: the publisher whose view of workloads this filters. */
  addresses?: AddressWithdrawal;
  now(): number;
}

export interface Liveness {
  /** Compares every agent with the clock and raises what changed. */
  sweep(): void;
  isOffline(agentId: string): boolean;
  /** Sweeps every `intervalMs` until stop(). */
  start(intervalMs: number): void;
  stop(): void;
}

export function createLiveness(deps: LivenessDeps): Liveness {
  const started = deps.now();
  const lastContact = new Map<string, number>();
  const offline = new Set<string>();
  let timer: NodeJS.Timeout | undefined;

  function sweep(): void {
    const now = deps.now();
    const byWorkload = new Map<string, boolean>(); // workload -> every agent offline
    for (const a of deps.agents()) {
      if (a.revoked) {
        offline.delete(a.id);
        continue;
      }
      if (deps.isConnected(a.id)) {
        lastContact.set(a.id, now);
        if (offline.delete(a.id)) deps.changed(a, 'online', now);
      } else {
        const since = lastContact.get(a.id) ?? started;
        if (!offline.has(a.id) && now - since >= deps.offlineAfterMs) {
          offline.add(a.id);
          deps.changed(a, 'offline', since);
        }
      }
      byWorkload.set(a.workload, (byWorkload.get(a.workload) ?? true) && offline.has(a.id));
    }
    if (deps.addresses) {
      const gone = [...byWorkload].filter(([, all]) => all).map(([w]) => w);
      deps.addresses.set(gone);
    }
  }

  return {
    sweep,
    isOffline: (agentId) => offline.has(agentId),
    start(intervalMs) {
      timer ??= setInterval(sweep, intervalMs);
      timer.unref();
    },
    stop() {
      clearInterval(timer);
      timer = undefined;
    },
  };
}

/**
 * The events of a change, in one transaction: an audit entry `agent.offline|online` (so the
 * SIEM hears it) and an AGENT_OFFLINE|AGENT_ONLINE event on the workload.
 */
export function livenessEvents(deps: {
  db: Transactor;
  audit: AuditLog;
  recordEvent(workload: string, e: Omit<ReportedEvent, 'at'>): void;
  log: Logger;
}): LivenessDeps['changed'] {
  return (agent, change, sinceMs) => {
    const since = new Date(sinceMs).toISOString();
    deps.log.warn({ agentId: agent.id, workload: agent.workload, since }, `agent ${change}`);
    deps.db.tx(() => {
      deps.audit.appendAudit({
        actor: 'control-plane',
        action: `agent.${change}`,
        target: agent.id,
        after: { workload: agent.workload, lastContact: since },
      });
      deps.recordEvent(agent.workload, {
        code: change === 'offline' ? 'AGENT_OFFLINE' : 'AGENT_ONLINE',
        message:
          change === 'offline'
            ? `agent ${agent.id} has had no stream since ${since}`
            : `agent ${agent.id} is connected again`,
        attributes: { agentId: agent.id, lastContact: since },
      });
    });
  };
}

/**
 * A publisher whose workloads named by set() reach it without addresses: their peers' rule
 * sets no longer allow (or deny) them. Every workload change passes through it, so a change to
 * a withdrawn workload keeps it withdrawn; set() publishes the difference at once.
 */
export interface AddressWithdrawal {
  readonly publisher: RuleSetPublisher;
  /** The workloads withdrawn from now on (all others are restored). */
  set(workloads: readonly string[]): void;
  withdrawn(): ReadonlySet<string>;
}

export function createAddressWithdrawal(
  publisher: RuleSetPublisher,
  current: (name: string) => Workload | undefined,
): AddressWithdrawal {
  let withdrawn = new Set<string>();
  const view = (name: string, w: Workload | undefined) =>
    w && withdrawn.has(name) ? { ...w, addresses: [] } : w;
  const filtered: RuleSetPublisher = {
    ...publisher,
    workloadsChanged: (changes) =>
      publisher.workloadsChanged(
        changes.map((c) => ({ name: c.name, workload: view(c.name, c.workload) })),
      ),
  };
  return {
    publisher: filtered,
    set(workloads) {
      const next = new Set(workloads);
      const flipped = [...next, ...withdrawn].filter((n) => next.has(n) !== withdrawn.has(n));
      withdrawn = next;
      // A workload deleted meanwhile is gone from the publisher already.
      const changes = flipped.flatMap((name) => {
        const w = current(name);
        return w ? [{ name, workload: view(name, w) }] : [];
      });
      if (changes.length > 0) publisher.workloadsChanged(changes);
    },
    withdrawn: () => withdrawn,
  };
}
