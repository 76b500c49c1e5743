// Answers of the visibility API (/v1/flows, /v1/map, /v1/recommendations). Addresses are
// resolved against the workloads and IP lists as they are at query time.
import type { Coverage, Labels, Policy } from '@bulkhead/policy';

export type FlowVerdict = 'allowed' | 'denied' | 'would-deny';

export interface Endpoint {
  address: string;
  workload?: string;
  labels?: Labels;
  ipLists?: string[];
}

export interface FlowView {
  src: Endpoint;
  dst: Endpoint;
  protocol: string;
  port: number;
  direction: 'ingress' | 'egress';
  reportedBy: string;
  verdict: FlowVerdict;
  ruleId: string;
  firstSeen: string;
  lastSeen: string;
  connections: number;
  bytes: number;
  /**
   * Ends (under the provisioned policy) that let the flow through only because they are in
   * monitor mode and no policy selects them in that direction: "web's egress has no policy".
   */
  noPolicy?: { workload: string; direction: 'ingress' | 'egress' }[];
}

export type EdgePolicy = FlowVerdict | 'not-covered';

export interface MapNode {
  id: string;
  kind: 'group' | 'ip-list' | 'external';
  name: string;
  labels?: Labels;
  workloads?: string[];
}

export interface MapEdge {
  from: string;
  to: string;
  protocol: string;
  port: number;
  connections: number;
  bytes: number;
  firstSeen: string;
  lastSeen: string;
  observed: Record<FlowVerdict, number>;
  policy: EdgePolicy;
  /** A `not-covered` edge: the directions (source's egress, destination's ingress) with no policy. */
  noPolicy?: ('ingress' | 'egress')[];
}

export interface MapView {
  groupBy: string[];
  nodes: MapNode[];
  edges: MapEdge[];
}

/** `POST /v1/recommendations` body: exactly one of `scope` (a selector) or `workload`. */
export interface RecommendationRequest {
  scope?: unknown;
  workload?: string;
  groupBy?: string[];
  since?: string;
}

/** Policy's recommendation, its uncovered flows resolved as `/v1/flows` shows them. */
export interface Recommendation {
  policies: Policy[];
  coverage: Coverage;
  uncovered: FlowView[];
}
