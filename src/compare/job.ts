// What the comparison hands to a worker process and gets back: one job (score the base model, or
// train one method on one task at one learning rate) and its measured result, both plain JSON
// written to the run's folder, so every run's peak memory is its own process's.

import type { TaskSpec } from '../tasks/tasks.js';
import type { MetricRecord } from '../train/metrics.js';
import type { CompareMethod } from './methods.js';

/** A task as a comparison uses it: its files and how its eval set is scored. */
export interface TaskRef {
  /** the name tables show ("sentiment", or the data file's folder name) */
  name: string;
  trainFile: string;
  evalFile: string;
  /** greedy generation scored by the task metric; null: scored by eval loss (text or chat data), or by `classification` */
  spec: TaskSpec | null;
  /** {"text","label"} rows for a sequence classifier, scored by the accuracy of the argmax of its logits */
  classification?: boolean;
}

export interface RunSettings {
  modelDir: string;
  /** how saved adapters name their base (base_model_name_or_path) */
  baseName: string;
  batchSize: number;
  maxLength: number;
  seed: number;
  threads?: number;
  /** score only the first n eval examples by generation */
  evalLimit?: number;
  /** prompts timed for the latency, one at a time */
  latencyPrompts: number;
  /** tokens generated per timed prompt (no early stop) */
  latencyTokens: number;
}

/** Score the untuned base on each task (quality and eval loss), and time its inference on the first. */
export interface BaseJob {
  kind: 'base';
  settings: RunSettings;
  tasks: TaskRef[];
  /** time batch-1 generation on the first task */
  timeLatency: boolean;
  outDir: string;
}

/** Train `method` on `task` for `steps` steps; `measure` adds timings, memory, stored size, latency and the eval-loss curve. */
export interface TrainJob {
  kind: 'train';
  settings: RunSettings;
  method: CompareMethod;
  task: TaskRef;
  learningRate: number;
  steps: number;
  measure: boolean;
  outDir: string;
}

export type CompareJob = BaseJob | TrainJob;

/** How well a model does on a task: the task metric (when the task has one) and the eval loss. */
export interface Quality {
  task: string;
  /** 'accuracy' | 'exact_match' for generation-scored tasks, 'eval_loss' otherwise */
  metric: string;
  /** higher is better, in [0, 1]: the metric, or exp(-eval loss) */
  value: number;
  correct?: number;
  total?: number;
  /** accuracy tasks: the share of the most common label among the scored references (what always answering it scores) */
  chance?: number;
  evalLoss: number;
  /** exp(-eval loss): the per-token geometric-mean probability of the references */
  lossQuality: number;
}

export interface Latency {
  /** median seconds to generate latencyTokens tokens for one prompt (batch 1, greedy, prefill included); for a classifier, of one forward pass of one eval example */
  medianS: number;
  prompts: number;
  /** tokens generated per prompt (0 for a classifier: one forward pass, no generation) */
  tokens: number;
}

export interface BaseResult {
  kind: 'base';
  totalParams: number;
  qualities: Quality[];
  latency?: Latency;
  seconds: number;
}

export interface TrainResult {
  kind: 'train';
  method: CompareMethod;
  peftType: string;
  task: string;
  learningRate: number;
  steps: number;
  trainableParams: number;
  totalParams: number;
  quality: Quality;
  finalLoss?: number;
  trainSeconds: number;
  seconds: number;
  /** present when the job measured */
  measured?: {
    /** per optimizer step (forward, backward, AdamW), seconds */
    stepTimesS: number[];
    medianStepS: number;
    /** peak resident set of the worker process at the end of training, bytes */
    peakRssBytes: number;
    /** bytes of the folder savePretrained writes (what must be stored per task) */
    storedBytes: number;
    storedFiles: string[];
    latency: Latency;
    /** the untuned base model timed interleaved with it, in the same process */
    baseLatency: Latency;
    /** train loss per step and eval loss per evaluation */
    metrics: MetricRecord[];
  };
}

export type JobResult = BaseResult | TrainResult;

/** What the worker writes: its result, or the error that stopped it. */
export type WorkerOutput = { ok: true; result: JobResult } | { ok: false; error: { name: string; message: string; stack?: string } };
