// The bundled downstream tasks and their metrics: specs and data files, greedy-generation scoring
// of any model (base or adapted), and the quickstart job that LoRA-tunes the bundled model on one.

export {
  type TaskSpec,
  type TaskMetric,
  type TaskExample,
  TaskError,
  TASKS,
  TASK_NAMES,
  getTask,
  packageRoot,
  bundledModelDir,
  taskDataDir,
  readTaskExamples,
  loadTaskData,
} from './tasks.js';
export { normalizeAnswer, labelOf, isCorrect } from './metrics.js';
export { type TaskEvalOptions, type TaskPrediction, type TaskEvaluation, evaluateTask, formatScore } from './evaluate.js';
export {
  type QuickstartOptions,
  type QuickstartResult,
  type QuickstartSample,
  QUICKSTART_DEFAULTS,
  EVAL_RESULTS_FILE,
  runQuickstart,
} from './quickstart.js';
