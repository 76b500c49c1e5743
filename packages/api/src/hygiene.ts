// Answer of `GET /v1/hygiene`: what in the policy and the fleet's credentials deserves a look,
// each finding with what to change.

export type HygieneKind =
  | 'unused-rule'
  | 'broad-rule'
  | 'shadowed-rule'
  | 'monitor-too-long'
  | 'unused-enrolment-token'
  | 'expiring-enrolment-token'
  | 'unused-api-token';

export interface HygieneFinding {
  kind: HygieneKind;
  /** What the finding is about: a rule id (`db/ingress/0`, `... peers[1]`), a workload, a token id. */
  subject: string;
  detail: string;
  /** What to change. */
  fix: string;
}

export interface HygieneView {
  /** The window flows were judged over, in days back from `at`. */
  days: number;
  at: string;
  /** The provisioned revision the rules are from. */
  revision: number;
  findings: HygieneFinding[];
}
