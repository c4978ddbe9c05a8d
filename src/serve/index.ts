// Serving many adapters over one base: the continuous-batching engine and the OpenAI-compatible server.
export {
  QueueFullError,
  ServeEngine,
  type EngineOptions,
  type EngineRequest,
  type EngineResult,
  type EngineStats,
  type FinishReason,
} from './engine.js';
export { OpenAIServer, type ServerOptions } from './server.js';
