// Measuring the PEFT methods against each other on the seed's five criteria (parameter, compute
// and space efficiency, performance, flexibility): the public surface of `peft compare`.

export { CompareError } from './errors.js';
export {
  compareMethods,
  defaultCompareMethods,
  methodSpec,
  type CompareMethod,
  METHOD_SPECS,
  type MethodSpec,
  REFERENCE_METHOD,
  VIRTUAL_TOKENS,
  adaptForComparison,
  loadBaseFor,
  parseMethods,
} from './methods.js';
export { type TaskChoice, bundledTask, inferTaskSpec, resolveTask } from './data.js';
export type {
  BaseJob,
  BaseResult,
  CompareJob,
  JobResult,
  Latency,
  Quality,
  RunSettings,
  TaskRef,
  TrainJob,
  TrainResult,
  WorkerOutput,
} from './job.js';
export { runJob, folderSize, median } from './run.js';
export {
  type FlexInput,
  type FlexPoint,
  type FlexRun,
  type Flexibility,
  computeFlexibility,
  flexibilityDefinition,
} from './flexibility.js';
export { CRITERIA, CRITERION_LABELS, type Criterion, RATING_RULES, type Rating, type RatingInputs, measuredRatings } from './ratings.js';
export { type LossSeries, type QualityPoint, lossCurvesSvg, qualityVsParamsSvg } from './plots.js';
export { type ComparisonReport, type MethodRow, comparisonMarkdown, comparisonSummary, formatBytes, formatQuality } from './report.js';
export { COMPARE_DEFAULTS, COMPARE_FILES, type CompareOptions, type ComparisonResult, runComparison } from './compare.js';
export {
  type Advice,
  type Constraints,
  DEFAULT_CONSTRAINTS,
  type Objective,
  adviceMarkdown,
  parseBytes,
  parseDurationMs,
  recommend,
  withinNoise,
} from './recommend.js';
