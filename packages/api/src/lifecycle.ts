// Answers of the policy lifecycle API (impact, provision, revision diff) and the agents list.
// Where policy's own result goes over the wire unchanged, its type is used as is.
import type {
  ImpactChange,
  ImpactReport,
  ObjectChange,
  ObservedFlow,
  WorkloadEffect,
} from '@bulkhead/policy';

/** `POST /v1/impact` body. `target` defaults to the draft. */
export interface ImpactRequest {
  target?: unknown;
  since?: string;
  until?: string;
  groupBy?: string[];
}

export interface ImpactRuleRef {
  workload: string;
  direction: 'ingress' | 'egress';
  /** The deciding rule, or 'no rule' for the default deny. */
  ruleId: string;
}

export interface ImpactGroupView {
  change: ImpactChange;
  src: string;
  dst: string;
  protocol: string;
  port: number;
  connections: number;
  lastSeen?: string;
  rules: ImpactRuleRef[];
  /**
   * Ends among `rules` whose default deny is there because no policy selects them in that
   * direction after the change ("web's egress has no policy"), as `FlowView.noPolicy` says it.
   */
  noPolicy?: { workload: string; direction: 'ingress' | 'egress' }[];
  flows: number;
}

/** Policy's impact report made flat: groups without their flows, times as ISO text. */
export interface ImpactView {
  summary: ImpactReport<ObservedFlow>['summary'];
  groups: ImpactGroupView[];
}

export interface ProvisionResult {
  revision: number;
  /** Workloads whose agent state changed. */
  changed: string[];
  unchanged: number;
  impact: ImpactView;
  /** Workloads whose rule set passes the control plane's `--max-ruleset-entries`. */
  warnings?: ProvisionWarning[];
}

export interface ProvisionWarning {
  workload: string;
  /** nft rules + group ranges the rules name + service ranges. */
  entries: number;
  message: string;
}

export interface RevisionDiff {
  from: number;
  to: number | 'draft';
  objects: ObjectChange[];
  workloads: WorkloadEffect[];
}

export interface AgentView {
  id: string;
  workload: string;
  hostname: string;
  connected: boolean;
  /** No stream for longer than the control plane's --offline-after. */
  offline: boolean;
  appliedRevision: number;
  appliedHash: string;
  desiredHash: string | null;
  desiredRevision: number | null;
  inSync: boolean;
  lastSeen: string | null;
  lastError: string;
  lastApplyMicros: number;
  version: string;
  revoked: boolean;
}

/** A staged rollout's state (`GET /v1/rollouts/current`, every rollout route's answer). */
export type RolloutStatus = 'running' | 'paused' | 'held' | 'completed' | 'aborted';

/** A flow that worked before the wave and an agent on the rollout's revision now denies. */
export interface RolloutBrokenFlow {
  /** The workload that reported it (rolled back to the base revision). */
  workload: string;
  direction: 'ingress' | 'egress';
  src: string;
  dst: string;
  protocol: number;
  port: number;
  /** The rule that denied it on the rollout's revision (`default`: no rule allows it). */
  ruleId: string;
}

export interface RolloutView {
  id: number;
  /** The revision being rolled out. */
  revision: number;
  /** The revision every workload had before (and returns to on abort). */
  baseRevision: number;
  note: string;
  actor: string;
  status: RolloutStatus;
  /** Workload names per wave; wave 0 is the canary. */
  waves: string[][];
  /** The wave being watched (its workloads and every earlier wave's follow `revision`). */
  wave: number;
  waveStartedAt: string;
  watchSeconds: number;
  /** Workloads the guard returned to the base revision. */
  rolledBack: string[];
  /** Why the rollout holds (set by the guard). */
  hold?: { at: string; message: string; flows: RolloutBrokenFlow[] };
  /** Set when the rollout completed or was aborted (abort makes a revision of the base again). */
  endRevision?: number;
  createdAt: string;
  updatedAt: string;
}

/** `POST /v1/rollouts`. Without canary, percent (default 10) of the workloads form the canary. */
export interface RolloutRequest {
  note: string;
  confirm?: boolean;
  /** Label selector `k=v[,k=v]` of the canary workloads. */
  canary?: string;
  percent?: number;
  /** Waves after the canary (default 3). */
  waves?: number;
  /** Watch window per wave in seconds (default 600). */
  watchSeconds?: number;
}
