// Which task a comparison trains on and how its eval set is scored: a bundled task by name or by
// its files, a prompt/completion file scored by exact match (or by accuracy when completions are
// a few label words), text/chat data scored by eval loss, or a sequence classifier's {"text","label"}
// rows scored by accuracy. Also the token-level data of a run.

import { basename, dirname, existsSync, join, resolve, statSync } from '../storage/index.js';
import type { Tokenizer } from '../io/tokenizer.js';
import { TASK_NAMES, type TaskSpec, getTask, taskDataDir } from '../tasks/tasks.js';
import {
  type ClassLabels,
  type ClassificationExample,
  type TokenizedExample,
  IGNORE_INDEX,
  prepareExamples,
  readJsonl,
  tokenizeClassification,
  tokenizeRecords,
} from '../train/data.js';
import { CompareError } from './errors.js';
import type { TaskRef } from './job.js';

/** The bundled task `name` with its data files. */
export function bundledTask(name: string): TaskRef {
  const spec = getTask(name);
  const dir = taskDataDir(spec.name);
  return { name: spec.name, trainFile: join(dir, 'train.jsonl'), evalFile: join(dir, 'eval.jsonl'), spec };
}

/** The bundled task whose train file is `file`, if it is one. */
function bundledTaskOf(file: string): string | undefined {
  const want = resolve(file);
  return TASK_NAMES.find((t) => resolve(taskDataDir(t), 'train.jsonl') === want);
}

const LABEL_WORD = /^[\p{L}\p{N}_-]+$/u;
const MAX_LABELS = 10;

/**
 * How a prompt/completion eval set is scored when it is not a bundled task: accuracy over the label
 * words when every completion is one of at most 10 single words, else exact match; answers get as
 * many new tokens as the longest reference needs, plus two.
 */
function inferTaskSpec(name: string, completions: readonly string[], tokenizer: Tokenizer): TaskSpec {
  const longest = Math.max(1, ...completions.map((c) => tokenizer.encode(c, { addSpecialTokens: false }).length));
  const maxNewTokens = Math.min(128, longest + 2);
  const words = [...new Set(completions.map((c) => c.trim()))];
  if (words.length >= 2 && words.length <= MAX_LABELS && words.every((w) => LABEL_WORD.test(w))) {
    return { name, description: `classification into ${words.join(', ')}`, metric: 'accuracy', labels: words, maxNewTokens };
  }
  return { name, description: 'prompt -> completion, scored by exact match', metric: 'exact_match', maxNewTokens };
}

function checkFile(flag: string, file: string): void {
  if (!existsSync(file)) throw new CompareError(`${flag} ${file} does not exist`);
  if (!statSync(file).isFile()) throw new CompareError(`${flag} ${file} is not a file; pass a .jsonl file`);
}

export interface TaskChoice {
  /** a bundled task (its files are the defaults of trainFile/evalFile) */
  task?: string;
  trainFile?: string;
  evalFile?: string;
}

/** A sequence-classification model's classes and the longest row it takes (special tokens included). */
export interface ClassifierInfo {
  labels: ClassLabels;
  maxLength: number;
}

const CLASSIFIER_DATA =
  'pass --data TRAIN.jsonl (and --eval EVAL.jsonl) with {"text","label"} rows; the bundled tasks are prompt/completion tasks for causal language models';

/**
 * The task of a comparison: checked, its files read and tokenized once so bad data fails before
 * anything runs. With `classifier` (the model is a sequence classifier) the files must hold
 * {"text","label"} rows, scored by accuracy.
 */
export async function resolveTask(choice: TaskChoice, tokenizer: Tokenizer, classifier?: ClassifierInfo): Promise<TaskRef> {
  if (classifier) {
    if (choice.task !== undefined)
      throw new CompareError(
        `--task ${choice.task} is for a causal language model, but this model is a sequence classifier; ${CLASSIFIER_DATA}`,
      );
    if (choice.trainFile === undefined) throw new CompareError(`this model is a sequence classifier: ${CLASSIFIER_DATA}`);
  }
  if (choice.task === undefined && choice.trainFile === undefined) {
    if (choice.evalFile !== undefined) throw new CompareError('--eval needs --data (the training file) or --task');
    return bundledTask('sentiment');
  }
  const named = choice.task !== undefined ? bundledTask(choice.task) : undefined;
  const trainFile = resolve(choice.trainFile ?? named!.trainFile);
  let evalFile: string;
  if (choice.evalFile !== undefined) evalFile = resolve(choice.evalFile);
  else if (named) evalFile = named.evalFile;
  else {
    const sibling = join(dirname(trainFile), 'eval.jsonl');
    if (!existsSync(sibling) || sibling === trainFile)
      throw new CompareError(`give the evaluation file with --eval (no eval.jsonl next to ${trainFile})`);
    evalFile = sibling;
  }
  checkFile('--data', trainFile);
  checkFile('--eval', evalFile);
  if (classifier) {
    for (const file of [trainFile, evalFile]) tokenizeClassification(await readJsonl(file), tokenizer, { ...classifier, file });
    return { name: taskNameOf(trainFile), trainFile, evalFile, spec: null, classification: true };
  }
  const train = tokenizeRecords(await readJsonl(trainFile), tokenizer, { file: trainFile });
  const evalRecords = await readJsonl(evalFile);
  const ev = tokenizeRecords(evalRecords, tokenizer, { file: evalFile });
  if (train.format !== ev.format)
    throw new CompareError(`${trainFile} holds ${train.format} records but ${evalFile} holds ${ev.format}; use one format for both`);
  const bundled = named?.name ?? bundledTaskOf(trainFile);
  if (bundled) return { name: bundled, trainFile, evalFile, spec: getTask(bundled) };
  const name = taskNameOf(trainFile);
  if (ev.format !== 'prompt-completion') return { name, trainFile, evalFile, spec: null };
  return {
    name,
    trainFile,
    evalFile,
    spec: inferTaskSpec(
      name,
      evalRecords.map((r) => String(r.value.completion)),
      tokenizer,
    ),
  };
}

/** A user's task is named by its data file's folder (or the file, at the root). */
function taskNameOf(trainFile: string): string {
  const folder = basename(dirname(trainFile));
  return folder && folder !== '.' ? folder : basename(trainFile, '.jsonl');
}

/** {"text","label"} rows of a jsonl file, tokenized for a sequence classifier and cut to maxLength. */
export async function classificationRows(file: string, tokenizer: Tokenizer, classifier: ClassifierInfo): Promise<ClassificationExample[]> {
  return tokenizeClassification(await readJsonl(file), tokenizer, { ...classifier, file }).examples;
}

/** Tokenized, truncated rows of a jsonl file. */
export async function tokenizedRows(file: string, tokenizer: Tokenizer, maxLength: number): Promise<TokenizedExample[]> {
  const { examples } = tokenizeRecords(await readJsonl(file), tokenizer, { file });
  return prepareExamples(examples, { maxLength, file }).examples;
}

/** The prompt part of a row: the tokens before its first label (at most 64), or its first 16 tokens when every token is a label. */
export function promptIds(row: TokenizedExample): number[] {
  const first = row.labels.findIndex((l) => l !== IGNORE_INDEX);
  const cut = first > 0 ? Math.min(first, 64) : Math.min(16, row.inputIds.length);
  return row.inputIds.slice(0, Math.max(1, cut));
}
