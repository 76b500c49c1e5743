// Types only: nothing here exists at run time. Policy's results that the API returns as they
// are (object changes, workload effects, coverage) keep policy's types.
export type {
  Coverage,
  ImpactChange,
  ObjectChange,
  ObjectKind,
  RuleChanges,
  WorkloadEffect,
} from '@bulkhead/policy';
export type {
  ExplainEnd,
  ExplainPair,
  ExplainRequest,
  ExplainSide,
  ExplainView,
} from './explain.js';
export type { HygieneFinding, HygieneKind, HygieneView } from './hygiene.js';
export type {
  AgentView,
  ImpactGroupView,
  ImpactRequest,
  ImpactRuleRef,
  ImpactView,
  ProvisionResult,
  ProvisionWarning,
  RevisionDiff,
  RolloutBrokenFlow,
  RolloutRequest,
  RolloutStatus,
  RolloutView,
} from './lifecycle.js';
export type {
  EdgePolicy,
  Endpoint,
  FlowVerdict,
  FlowView,
  MapEdge,
  MapNode,
  MapView,
  Recommendation,
  RecommendationRequest,
} from './visibility.js';
