// The bundled downstream tasks as prompt/completion pairs: sentiment (a review -> its label word),
// json (a "key: value; ..." record -> the same record as JSON) and arith (an addition question ->
// the sum). Inputs use the pretraining corpus's vocabulary; the prompt formats appear only here.
// Plus one preference task for DPO/ORPO as {"prompt","chosen","rejected"} rows: "name a <category>",
// an answer of the category chosen over one of a confusable category.

import { ANIMALS, CITIES, COLORS, DAYS, FOODS, JOBS, MONTHS, Picker, SPORTS } from './lexicon.js';
import { jsonText, recordFields, recordText, review } from './text.js';

export interface TaskExample {
  prompt: string;
  completion: string;
}

export const TASK_NAMES = ['sentiment', 'json', 'arith'] as const;
export type TaskName = (typeof TASK_NAMES)[number];

function sentiment(p: Picker): TaskExample {
  const label = p.chance(0.5) ? 'positive' : 'negative';
  return { prompt: `Review: ${review(p, label)}\nSentiment:`, completion: ` ${label}` };
}

function json(p: Picker): TaskExample {
  const fields = recordFields(p, p.int(2, 3));
  return { prompt: `Record: ${recordText(fields)}\nJSON:`, completion: ` ${jsonText(fields)}` };
}

function arith(p: Picker): TaskExample {
  const terms = p.chance(0.6) ? [p.int(0, 30), p.int(0, 30)] : [p.int(0, 12), p.int(0, 12), p.int(0, 12)];
  const sum = terms.reduce((a, b) => a + b, 0);
  return { prompt: `Question: what is ${terms.join(' plus ')}?\nAnswer:`, completion: ` ${sum}` };
}

const MAKERS: Record<TaskName, (p: Picker) => TaskExample> = { sentiment, json, arith };

/** Random streams per task and split, so adding a task never changes another one's files. */
const STREAMS: Record<TaskName, number> = { sentiment: 101, json: 102, arith: 103 };

/**
 * `train` and `eval` examples of a task, with distinct prompts: duplicates within a split and eval
 * prompts that also occur in train are drawn again.
 */
export function taskSplits(
  task: TaskName,
  seed: number,
  sizes: { train: number; eval: number },
): { train: TaskExample[]; eval: TaskExample[] } {
  const make = MAKERS[task];
  const p = new Picker(seed, STREAMS[task]);
  const seen = new Set<string>();
  const draw = (n: number): TaskExample[] => {
    const out: TaskExample[] = [];
    for (let tries = 0; out.length < n; tries++) {
      if (tries > n * 50) throw new Error(`task ${task} cannot produce ${n} distinct prompts; its generator repeats too often`);
      const ex = make(p);
      if (seen.has(ex.prompt)) continue;
      seen.add(ex.prompt);
      out.push(ex);
    }
    return out;
  };
  const train = draw(sizes.train);
  return { train, eval: draw(sizes.eval) };
}

/** A preference row (TRL's format): the prompt, the preferred completion and the dispreferred one. */
export interface PreferenceExample {
  prompt: string;
  chosen: string;
  rejected: string;
}

/** The bundled preference task's folder name under data/tasks. */
export const PREFERENCE_TASK = 'preference';

/** Categories the corpus's word lists give ("fish", both an animal and a food, is left out). */
const CATEGORIES: Record<string, readonly string[]> = {
  color: COLORS,
  city: CITIES,
  animal: ANIMALS.filter((w) => w !== 'fish'),
  food: FOODS.filter((w) => w !== 'fish'),
  job: JOBS,
  sport: SPORTS,
  day: DAYS,
  month: MONTHS,
};
/** Each category's rejected answers come from one confusable partner category. */
const PARTNER: Record<string, string> = {
  color: 'city',
  city: 'color',
  animal: 'food',
  food: 'animal',
  job: 'sport',
  sport: 'job',
  day: 'month',
  month: 'day',
};

/**
 * `train` and `eval` preference rows, no (prompt, chosen, rejected) triple twice: "Question: name a(n)
 * <category>.\nAnswer:", an answer of that category chosen and one of its partner category
 * rejected (a day over a month, an animal over a food, ...). Own random stream, so the other
 * tasks' files do not change.
 */
export function preferenceSplits(
  seed: number,
  sizes: { train: number; eval: number },
): { train: PreferenceExample[]; eval: PreferenceExample[] } {
  const p = new Picker(seed, 104);
  const names = Object.keys(CATEGORIES);
  const seen = new Set<string>();
  const draw = (n: number): PreferenceExample[] => {
    const out: PreferenceExample[] = [];
    for (let tries = 0; out.length < n; tries++) {
      if (tries > n * 50) throw new Error(`the preference task cannot produce ${n} distinct rows`);
      const category = p.pick(names);
      const ex = {
        prompt: `Question: name ${/^[aeiou]/.test(category) ? 'an' : 'a'} ${category}.\nAnswer:`,
        chosen: ` ${p.pick(CATEGORIES[category]!)}`,
        rejected: ` ${p.pick(CATEGORIES[PARTNER[category]!]!)}`,
      };
      const key = JSON.stringify(ex);
      if (seen.has(key)) continue;
      seen.add(key);
      out.push(ex);
    }
    return out;
  };
  const train = draw(sizes.train);
  return { train, eval: draw(sizes.eval) };
}
