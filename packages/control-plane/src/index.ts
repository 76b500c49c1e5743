export { type ErrorBody, toErrorResponse } from './api.js';
export {
  type ControlPlane,
  type ControlPlaneOptions,
  createControlPlane,
  DEFAULT_API_LISTEN,
  DEFAULT_GRPC_LISTEN,
} from './control-plane.js';
export type { AgentView, ImpactRequest, ProvisionResult, RevisionDiff } from './engine.js';
export { ControlPlaneError, type ControlPlaneErrorCode, type ErrorDetail } from './errors.js';
export type { ImpactGroupView, ImpactRuleRef, ImpactView } from './lifecycle.js';
export type { Endpoint, FlowView, MapEdge, MapNode, MapView } from './visibility.js';
