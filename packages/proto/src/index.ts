// Public surface of the generated wire contract. The files under gen/ are produced by
// `npm run gen` from proto/bulkhead/v1 (ts-proto) and are never edited by hand.
export {
  Action,
  type AgentEvent,
  AgentServiceClient,
  type AgentServiceServer,
  AgentServiceService,
  type ApplyAck,
  Direction,
  type EnrollRequest,
  type EnrollResponse,
  type Entry,
  type FlowRecord,
  type Hello,
  Mode,
  type Rule,
  type RuleCounter,
  RuleSet,
  type SyncRequest,
  type SyncResponse,
  type Telemetry,
  Verdict,
} from './gen/bulkhead/v1/agent.js';
