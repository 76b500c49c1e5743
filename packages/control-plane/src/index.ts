// The REST contract's types, where callers of this package found them before @bulkhead/api.
export type {
  AgentView,
  Endpoint,
  FlowView,
  ImpactGroupView,
  ImpactRequest,
  ImpactRuleRef,
  ImpactView,
  MapEdge,
  MapNode,
  MapView,
  ProvisionResult,
  RevisionDiff,
} from '@bulkhead/api';
export { type ErrorBody, toErrorResponse } from './api.js';
export {
  type ControlPlane,
  type ControlPlaneOptions,
  createControlPlane,
  DEFAULT_API_LISTEN,
  DEFAULT_GRPC_LISTEN,
} from './control-plane.js';
export { ControlPlaneError, type ControlPlaneErrorCode, type ErrorDetail } from './errors.js';
