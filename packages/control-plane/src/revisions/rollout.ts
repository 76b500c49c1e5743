// Staged rollout: the draft frozen into a revision behind the impact gate, given to a canary
// first and then to the rest in waves, one watch window each; pause, resume, abort; and the
// guard that holds the rollout and returns a workload to the base revision when it denies flows
// that worked before the wave. Every step is audited and stored, so a restarted control plane
// resumes it. Must not edit the draft, and changes which revision an agent follows only through
// the follower.
import type { RolloutBrokenFlow, RolloutRequest, RolloutView } from '@bulkhead/api';
import type { Logger } from 'pino';
import type { AuditLog } from '../access/store.js';
import { ControlPlaneError, notFound } from '../errors.js';
import { DEFAULT_RULE_ID } from '../fleet/telemetry.js';
import type { PolicyStates, Snapshot } from '../policy-state.js';
import type { RevisionFollower } from '../rulesets/follower.js';
import type { Transactor } from '../store/database.js';
import type { FlowDelta, ReportedEvent, VisibilityStore } from '../visibility/store.js';
import { brokenFlows } from './rollout-guard.js';
import { parseCanary, planWaves } from './rollout-plan.js';
import { ACTIVE_STATUSES, type RolloutStore } from './rollout-store.js';
import type { RevisionsService } from './service.js';
import type { RevisionStore } from './store.js';

export const DEFAULT_CANARY_PERCENT = 10;
export const DEFAULT_WAVES = 3;
export const DEFAULT_WATCH_SECONDS = 600;

export interface RolloutService {
  /** Freezes the draft (IMPACT_CONFIRMATION_REQUIRED unless confirmed) and starts the canary. */
  start(actor: string, req: RolloutRequest): RolloutView;
  /** The active rollout, else the newest one; NOT_FOUND when there was none. */
  current(): RolloutView;
  get(id: number): RolloutView;
  /** Stops advancing (the guard still watches). */
  pause(actor: string): RolloutView;
  /** Watches the current wave again from now; after a hold, the rolled-back workloads retry. */
  resume(actor: string): RolloutView;
  /** Every workload returns to the base revision, made the latest again as a new revision. */
  abort(actor: string): RolloutView;
  /** Advances a running rollout whose watch window has passed (the timer calls it). */
  tick(): void;
  /** A workload's counted flows (telemetry): the guard. */
  observed(workload: string, flows: readonly FlowDelta[]): void;
  /**
   * At start: the active rollout's workloads follow its revision again; a running one watches
   * its current wave again from now.
   */
  restore(): void;
  /** Why no other revision may be made now, or undefined. */
  busy(): string | undefined;
}

export interface RolloutDeps {
  store: RolloutStore;
  revisionStore: Pick<RevisionStore, 'addRevision' | 'getRevision'>;
  revisions: Pick<RevisionsService, 'freeze'>;
  db: Transactor;
  states: PolicyStates;
  follower: RevisionFollower;
  audit: AuditLog;
  flows: Pick<VisibilityStore, 'queryFlows' | 'recordControlPlaneEvent'>;
  log: Logger;
  now?: () => Date;
}

const isActive = (r: RolloutView | undefined): r is RolloutView =>
  r !== undefined && (ACTIVE_STATUSES as readonly string[]).includes(r.status);

/** The rule that denied a flow, in words (the default deny has the id `default`). */
const ruleName = (id: string) =>
  id === DEFAULT_RULE_ID || id === '' ? 'default deny' : `rule ${id}`;

const describe = (f: RolloutBrokenFlow) =>
  `${f.src} -> ${f.dst} ${f.protocol}/${f.port} (${f.direction} of ${f.workload}, ${ruleName(f.ruleId)})`;

export function createRolloutService(deps: RolloutDeps): RolloutService {
  const { store, db, states, follower, audit, log } = deps;
  const now = deps.now ?? (() => new Date());
  /** The active rollout as last written (telemetry consults it on every batch). */
  let active = store.active();

  function save(r: RolloutView, action: string, actor: string, after: unknown): RolloutView {
    const saved = db.tx(() => {
      audit.appendAudit({ actor, action: `rollout.${action}`, target: String(r.id), after });
      return store.update(r);
    });
    active = isActive(saved) ? saved : undefined;
    log.info({ rollout: saved.id, status: saved.status, wave: saved.wave, action }, 'rollout');
    return saved;
  }

  function requireActive(...statuses: RolloutView['status'][]): RolloutView {
    if (!active) throw new ControlPlaneError('CONFLICT', 'no rollout is active');
    if (!statuses.includes(active.status)) {
      throw new ControlPlaneError('CONFLICT', `the rollout is ${active.status}`);
    }
    return active;
  }

  /** Workloads of waves 0..wave, except those the guard rolled back. */
  const onRevision = (r: RolloutView) => {
    const back = new Set(r.rolledBack);
    return r.waves
      .slice(0, r.wave + 1)
      .flat()
      .filter((w) => !back.has(w));
  };

  /**
   * Ends the rollout: base takes the end revision's objects, labels and modes, and every agent
   * follows it.
   */
  function end(
    r: RolloutView,
    action: 'complete' | 'abort',
    actor: string,
    endRevision: () => number,
  ): RolloutView {
    const saved = db.tx(() => {
      const n = endRevision();
      const status = action === 'complete' ? 'completed' : 'aborted';
      return save({ ...r, status, endRevision: n }, action, actor, { endRevision: n });
    });
    follower.end(states.atRevision(saved.endRevision!, states.workloads()), saved.endRevision!);
    return saved;
  }

  function advance(r: RolloutView): void {
    if (r.wave + 1 >= r.waves.length) {
      end(r, 'complete', 'system', () => r.revision);
      return;
    }
    const wave = r.wave + 1;
    save({ ...r, wave, waveStartedAt: now().toISOString() }, 'wave', 'system', {
      wave,
      workloads: r.waves[wave],
    });
    follower.follow(r.waves[wave]!, 'next');
  }

  function hold(r: RolloutView, workload: string, broken: RolloutBrokenFlow[]): void {
    const rules = [...new Set(broken.map((f) => ruleName(f.ruleId)))].join(', ');
    const message = `revision ${r.revision} denied ${broken.length} flow${broken.length === 1 ? '' : 's'} that worked before wave ${r.wave}: ${broken.map(describe).join('; ')}; ${workload} returned to revision ${r.baseRevision}`;
    const at = now().toISOString();
    const event: Omit<ReportedEvent, 'at'> = {
      code: 'ROLLOUT_HELD',
      message,
      attributes: { rollout: String(r.id), revision: String(r.revision), rules },
    };
    db.tx(() => {
      deps.flows.recordControlPlaneEvent(workload, event);
      save(
        {
          ...r,
          status: 'held',
          rolledBack: [...r.rolledBack, workload],
          hold: { at, message, flows: [...(r.hold?.flows ?? []), ...broken] },
        },
        'hold',
        'system',
        { workload, flows: broken, message },
      );
    });
    log.warn({ rollout: r.id, workload, flows: broken }, `rollout held: ${message}`);
    follower.follow([workload], 'base');
  }

  return {
    start(actor, req) {
      const workloads = states.workloads();
      const canary = req.canary === undefined ? undefined : parseCanary(req.canary);
      const watchSeconds = req.watchSeconds ?? DEFAULT_WATCH_SECONDS;
      const { rollout, state } = db.tx(() => {
        const baseRevision = states.provisioned([]).revision;
        const frozen = deps.revisions.freeze(actor, req.note, { confirm: req.confirm });
        const waves = planWaves(workloads, {
          canary,
          percent: req.percent ?? DEFAULT_CANARY_PERCENT,
          waves: req.waves ?? DEFAULT_WAVES,
          seed: String(frozen.revision),
        });
        const rollout = store.add({
          revision: frozen.revision,
          baseRevision,
          note: req.note,
          actor,
          status: 'running',
          waves,
          wave: 0,
          waveStartedAt: now().toISOString(),
          watchSeconds,
          rolledBack: [],
        });
        audit.appendAudit({
          actor,
          action: 'rollout.start',
          target: String(rollout.id),
          after: {
            revision: frozen.revision,
            baseRevision,
            waves,
            watchSeconds,
            impact: frozen.impact.summary,
          },
        });
        return { rollout, state: frozen.state };
      });
      active = rollout;
      follower.begin(state, rollout.revision);
      follower.follow(rollout.waves[0]!, 'next');
      log.info(
        { rollout: rollout.id, revision: rollout.revision, waves: rollout.waves },
        'rollout started',
      );
      return rollout;
    },
    current() {
      const r = active ?? store.latest();
      if (!r) throw notFound('rollout');
      return r;
    },
    get(id) {
      const r = store.get(id);
      if (!r) throw notFound(`rollout ${id}`);
      return r;
    },
    pause: (actor) => save({ ...requireActive('running'), status: 'paused' }, 'pause', actor, {}),
    resume(actor) {
      const r = requireActive('paused', 'held');
      const saved = save(
        {
          ...r,
          status: 'running',
          rolledBack: [],
          hold: undefined,
          waveStartedAt: now().toISOString(),
        },
        'resume',
        actor,
        { retried: r.rolledBack },
      );
      follower.follow(onRevision(saved), 'next');
      return saved;
    },
    abort(actor) {
      const r = requireActive(...ACTIVE_STATUSES);
      return end(r, 'abort', actor, () => {
        const base = deps.revisionStore.getRevision<Snapshot>(r.baseRevision)?.snapshot;
        const empty: Snapshot = { workloads: [], ipLists: [], services: [], policies: [] };
        const note = `rollout ${r.id} aborted: revision ${r.baseRevision} again`;
        return deps.revisionStore.addRevision(actor, note, base ?? empty);
      });
    },
    tick() {
      const r = active;
      if (r?.status !== 'running') return;
      if (now().getTime() - Date.parse(r.waveStartedAt) < r.watchSeconds * 1000) return;
      advance(r);
    },
    observed(workload, flows) {
      const r = active;
      if (!r || follower.sideOf(workload) !== 'next') return;
      if (!flows.some((f) => f.verdict === 'denied')) return;
      const broken = brokenFlows(deps.flows, workload, flows, r.waveStartedAt);
      if (broken.length > 0) hold(r, workload, broken);
    },
    restore() {
      if (!active) return;
      follower.begin(states.atRevision(active.revision, states.workloads()), active.revision);
      follower.follow(onRevision(active), 'next');
      // The guard heard nothing while the control plane was down: the wave is watched again in
      // full before the next one starts.
      if (active.status === 'running') {
        save({ ...active, waveStartedAt: now().toISOString() }, 'restore', 'system', {
          wave: active.wave,
        });
      }
      log.info({ rollout: active.id, status: active.status, wave: active.wave }, 'rollout resumed');
    },
    busy: () =>
      active ? `rollout ${active.id} is ${active.status}; finish or abort it first` : undefined,
  };
}
