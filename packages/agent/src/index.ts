export { AgentError, type AgentErrorCode } from './errors.js';
export { type Failsafe, renderCommands, renderRuleSet } from './render.js';
