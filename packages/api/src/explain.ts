// Answer of `POST /v1/explain`: why a connection between two endpoints is allowed or not, at
// each workload end, under the provisioned policy and the draft (or one revision).
import type { DirectionName, ModeName } from '@bulkhead/policy';
import type { EdgePolicy } from './visibility.js';

/** `POST /v1/explain` body. `from`/`to`: a workload name, labels `k=v[,k=v]` or an address. */
export interface ExplainRequest {
  from: string;
  to: string;
  /** tcp, udp, sctp, icmp, icmpv6 or a number 1..255. */
  protocol: string;
  port?: number;
  /** Explain under revision n alone. */
  revision?: number;
  /** Explain under the draft alone. */
  draft?: boolean;
}

export interface ExplainEnd {
  workload: string;
  direction: DirectionName;
  mode: ModeName;
  action: 'allow' | 'deny';
  /** The deciding rule; absent for the default deny. */
  ruleId?: string;
  /** The policies that select the workload in this direction (none: no policy speaks here). */
  policies: string[];
  verdict: EdgePolicy;
  /** Why, in words: `allowed by db/ingress/0`, `default deny: no rule allows it`, ... */
  reason: string;
}

export interface ExplainPair {
  src: { address: string; workload?: string };
  dst: { address: string; workload?: string };
  /** The worst end: denied > would-deny > not-covered > allowed (no workload end: not-covered). */
  verdict: EdgePolicy;
  /** One sentence: what happens to the connection and which end decides it. */
  summary: string;
  /** The source's egress first, then the destination's ingress. */
  ends: ExplainEnd[];
}

export interface ExplainSide {
  /** `provisioned`, `draft` or `revision`. */
  state: 'provisioned' | 'draft' | 'revision';
  /** The revision (provisioned: the latest one, 0 before the first); absent for the draft. */
  revision?: number;
  pairs: ExplainPair[];
}

export interface ExplainView {
  from: string;
  to: string;
  protocol: string;
  port: number;
  /** Default: provisioned, then draft. */
  sides: ExplainSide[];
  /** Labels matched more workload pairs than are explained. */
  truncated: boolean;
}
