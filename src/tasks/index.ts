// The bundled downstream tasks and their metrics: specs and data files, greedy-generation scoring
// of any model (base or adapted), and the quickstart job that LoRA-tunes the bundled model on one.

export { type TaskSpec, TaskError, TASKS, TASK_NAMES, getTask, bundledModelDir, taskDataDir, loadTaskData } from './tasks.js';
export { normalizeAnswer, labelOf, isCorrect } from './metrics.js';
export { type TaskEvalOptions, type TaskEvaluation, evaluateTask, formatScore } from './evaluate.js';
export { type QuickstartOptions, type QuickstartResult, QUICKSTART_DEFAULTS, EVAL_RESULTS_FILE, runQuickstart } from './quickstart.js';
