// Measuring the PEFT methods against each other on the seed's five criteria (parameter, compute
// and space efficiency, performance, flexibility): the public surface of `peft compare`.

export { CompareError } from './errors.js';
export { compareMethods, defaultCompareMethods, type CompareMethod } from './methods.js';
export type { Quality } from './job.js';
export { type FlexRun, computeFlexibility, flexibilityDefinition } from './flexibility.js';
export { measuredRatings } from './ratings.js';
export { type ComparisonReport, comparisonMarkdown, comparisonSummary } from './report.js';
export { COMPARE_DEFAULTS, COMPARE_FILES, type CompareOptions, type ComparisonResult, runComparison } from './compare.js';
export { type Constraints, type Objective, adviceMarkdown, parseBytes, parseDurationMs, recommend } from './recommend.js';
