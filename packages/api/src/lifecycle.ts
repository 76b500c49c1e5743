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
