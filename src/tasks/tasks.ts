// The downstream tasks bundled with the package (data/tasks/<task>/{train,eval}.jsonl, made by
// scripts/make_tasks.ts) and the bundled base model (models/tiny-llama): what each task scores and
// how, where the files are, and reading their prompt/completion examples.

import { dirname, existsSync, host, join, readFileSync, resolve } from '../storage/index.js';
import { readJsonl } from '../train/data.js';
import { DatasetError } from '../train/errors.js';
import { PeftError } from '../errors.js';

/** accuracy: the label word of the output is the reference's; exact_match: output == reference, whitespace stripped. */
export type TaskMetric = 'accuracy' | 'exact_match';

export interface TaskSpec {
  name: string;
  description: string;
  metric: TaskMetric;
  /** the label words of a classification task (scored by `accuracy`) */
  labels?: readonly string[];
  /** new tokens generated per prompt when scoring (the longest answer fits) */
  maxNewTokens: number;
}

export interface TaskExample {
  prompt: string;
  completion: string;
}

export class TaskError extends PeftError {
  constructor(message: string) {
    super(message);
    this.name = 'TaskError';
  }
}

export const TASKS: Readonly<Record<string, TaskSpec>> = {
  sentiment: {
    name: 'sentiment',
    description: 'a short review of a place -> " positive" or " negative"',
    metric: 'accuracy',
    labels: ['positive', 'negative'],
    maxNewTokens: 4,
  },
  json: {
    name: 'json',
    description: 'a "key: value; ..." record -> the same record as a JSON object',
    metric: 'exact_match',
    maxNewTokens: 48,
  },
  arith: {
    name: 'arith',
    description: 'the sum of two or three whole numbers, asked in words -> the number',
    metric: 'exact_match',
    maxNewTokens: 6,
  },
};

export const TASK_NAMES = Object.keys(TASKS);

/** The spec of a bundled task, or a TaskError naming the ones there are. */
export function getTask(name: string): TaskSpec {
  const spec = TASKS[name];
  if (!spec) throw new TaskError(`unknown task "${name}"; bundled tasks: ${TASK_NAMES.join(', ')}`);
  return spec;
}

let root: string | undefined;

/** The folder holding this package's package.json (where models/ and data/ are), found from this module's location. */
export function packageRoot(): string {
  if (root) return root;
  let dir = dirname(host.fileURLToPath(import.meta.url));
  for (;;) {
    const pkg = join(dir, 'package.json');
    if (existsSync(pkg)) {
      try {
        if ((JSON.parse(readFileSync(pkg, 'utf8')) as { name?: string }).name === 'peft-ts') return (root = dir);
      } catch {
        // not our package.json; keep looking upwards
      }
    }
    const up = dirname(dir);
    if (up === dir)
      throw new TaskError(
        `cannot find the peft-ts package folder above ${host.fileURLToPath(import.meta.url)}; pass the model and data folders explicitly`,
      );
    dir = up;
  }
}

/** models/tiny-llama of this package: the small pretrained Llama the quickstart tunes. */
export function bundledModelDir(): string {
  return join(packageRoot(), 'models', 'tiny-llama');
}

/** data/tasks/<task> of this package. */
export function taskDataDir(task: string): string {
  return join(packageRoot(), 'data', 'tasks', getTask(task).name);
}

/** Reads a jsonl file of {"prompt", "completion"} string pairs. */
export async function readTaskExamples(file: string): Promise<TaskExample[]> {
  const records = await readJsonl(file);
  return records.map(({ line, value }) => {
    if (typeof value.prompt !== 'string' || typeof value.completion !== 'string') {
      throw new DatasetError('a task example needs string fields "prompt" and "completion"', { file, line });
    }
    return { prompt: value.prompt, completion: value.completion };
  });
}

/** The train and eval examples of a task, from `dir` (default: the bundled data/tasks/<task>). */
export async function loadTaskData(task: string, dir?: string): Promise<{ dir: string; train: TaskExample[]; eval: TaskExample[] }> {
  const folder = resolve(dir ?? taskDataDir(task));
  const files = { train: join(folder, 'train.jsonl'), eval: join(folder, 'eval.jsonl') };
  for (const f of Object.values(files)) {
    if (!existsSync(f))
      throw new TaskError(
        `task data file ${f} is missing; regenerate the bundled tasks with \`npm run make-tasks\` or pass a folder holding train.jsonl and eval.jsonl`,
      );
  }
  return { dir: folder, train: await readTaskExamples(files.train), eval: await readTaskExamples(files.eval) };
}
