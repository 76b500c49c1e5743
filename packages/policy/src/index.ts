export {
  type CalcResult,
  type Calculator,
  createCalculator,
} from './calc/calculator.js';
export { createDecider, type Decide, decideOn } from './calc/decide.js';
export {
  applyDelta,
  type CalcDelta,
  type CalcSnapshot,
  type GroupChange,
  type WorkloadChange,
} from './calc/delta.js';
export { evaluateGroups, type GroupLookup } from './calc/evaluate.js';
export { hashGroupRuleSet, selectorKey, toAddressRange } from './calc/rules.js';
export { type CompileResult, compile, hashRuleSet } from './compile.js';
export {
  diffRuleSets,
  diffStates,
  type ModeChange,
  type ObjectChange,
  type ObjectKind,
  type RuleChanges,
  type WorkloadEffect,
} from './diff.js';
export { PolicyError } from './errors.js';
export {
  type Decision,
  type DirectionName,
  evaluate,
  evaluatePolicy,
  policiesFor,
} from './evaluate.js';
export {
  analyzeImpact,
  createImpactMemo,
  type EndOutcome,
  type EndpointGroup,
  type Flow,
  type FlowChange,
  type ImpactChange,
  type ImpactEnd,
  type ImpactFlow,
  type ImpactGroup,
  type ImpactMemo,
  type ImpactOptions,
  type ImpactReport,
  impact,
  impactOn,
} from './impact.js';
export {
  createFlowFold,
  type FlowEndpoint,
  type FlowFold,
  type ObservedFlow,
} from './impact-flows.js';
export {
  type Family,
  formatAddress,
  type IpAddress,
  type IpRange,
  normalizeRanges,
  parseAddress,
  parseCidr,
  subtractRanges,
} from './ip.js';
export type * from './model.js';
export { PORT_PROTOCOL_NUMBERS, PROTOCOLS } from './protocols.js';
export {
  IpListSchema,
  LabelsSchema,
  ModeNameSchema,
  PeerSchema,
  PolicyRuleSchema,
  PolicySchema,
  PortSpecSchema,
  ProtocolSchema,
  SelectorRequirementSchema,
  SelectorSchema,
  ServiceSchema,
  WorkloadModeSchema,
  WorkloadPatchSchema,
  WorkloadSchema,
} from './schema.js';
export { matchesSelector } from './selector.js';
export {
  validateIpList,
  validatePolicy,
  validateService,
  validateWorkload,
  validateWorkloadPatch,
} from './validate.js';
export { validateState } from './validate-state.js';
export {
  type Coverage,
  classifyFlow,
  type FlowClassification,
  type FlowEnd,
  type FlowTuple,
  type FlowVerdict,
  type Recommendation,
  type RecommendInput,
  type RecommendScope,
  recommend,
} from './visibility.js';
