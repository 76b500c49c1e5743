export { ConfigError, type ConfigSources, parseSettings, settingSource } from './settings.js';
