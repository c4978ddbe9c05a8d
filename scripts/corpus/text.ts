// The synthetic English-like text the bundled model is pretrained on: short documents of templated
// sentences (stories, reviews, key: value records, JSON snippets, arithmetic statements, lists,
// counting), all drawn from a seeded Picker. The reviews and records are also what the downstream
// tasks are made from (scripts/corpus/tasks.ts), in other surroundings than the tasks' prompts.

import {
  ANIMALS,
  CITIES,
  COLORS,
  DAYS,
  FOODS,
  JOBS,
  MONTHS,
  NAMES,
  OBJECTS,
  PLACES,
  RECORD_FIELDS,
  REVIEW_ASPECTS,
  REVIEW_CLOSERS,
  REVIEW_OPENERS,
  SIZES,
  SPORTS,
  VERBS_PAST,
  type Picker,
  type RecordField,
  article,
  capitalize,
  fieldValue,
  listPhrase,
  plural,
} from './lexicon.js';

export type Sentiment = 'positive' | 'negative';

/**
 * A review whose sentiment is fixed by construction: an opener or a closer of that sentiment and
 * aspects judged that way; at most one aspect judged the other way (led by "Only", "Sadly," or
 * "At least"), and only when at least three judgements of the stated sentiment outweigh it.
 */
export function review(p: Picker, sentiment: Sentiment): string {
  const key = sentiment === 'positive' ? 'pos' : 'neg';
  const other = key === 'pos' ? 'neg' : 'pos';
  const aspects = p.sample(REVIEW_ASPECTS, p.int(2, 3));
  const parts: string[] = [];
  const opener = p.chance(0.6);
  const closer = !opener || p.chance(0.5);
  if (opener) parts.push(p.pick(REVIEW_OPENERS[key]));
  const judged = aspects.map((a) => `the ${a.noun} was ${p.pick(a[key])}`);
  if (judged.length === 3 && p.chance(0.5)) parts.push(`${capitalize(judged[0]!)}, ${judged[1]} and ${judged[2]}.`);
  else if (judged.length >= 2 && p.chance(0.5)) {
    parts.push(`${capitalize(judged[0]!)} and ${judged[1]}.`);
    for (const j of judged.slice(2)) parts.push(`${capitalize(j)}.`);
  } else for (const j of judged) parts.push(`${capitalize(j)}.`);
  const strength = judged.length + (opener ? 1 : 0) + (closer ? 1 : 0);
  if (strength >= 3 && p.chance(0.3)) {
    const rest = REVIEW_ASPECTS.filter((a) => !aspects.includes(a));
    const a = p.pick(rest);
    const lead = p.chance(0.5) ? 'Only' : key === 'pos' ? 'Sadly,' : 'At least';
    parts.push(`${lead} the ${a.noun} was ${p.pick(a[other])}.`);
  }
  if (closer) parts.push(p.pick(REVIEW_CLOSERS[key]));
  return parts.join(' ');
}

/** The fields of one record, with their values. */
export function recordFields(p: Picker, count: number): [RecordField, string | number][] {
  return p.sample(RECORD_FIELDS, count).map((f) => [f, fieldValue(p, f)]);
}

/** "name: Alice; city: Paris; age: 34" */
export function recordText(fields: readonly [string, string | number][]): string {
  return fields.map(([k, v]) => `${k}: ${v}`).join('; ');
}

/** {"name": "Alice", "city": "Paris", "age": 34}: JSON.stringify's values, Python's ", " and ": " spacing. */
export function jsonText(fields: readonly [string, string | number][]): string {
  return `{${fields.map(([k, v]) => `${JSON.stringify(k)}: ${JSON.stringify(v)}`).join(', ')}}`;
}

function story(p: Picker): string {
  const a = p.pick(NAMES);
  const b = p.pick(NAMES.filter((n) => n !== a));
  const obj = p.pick(OBJECTS);
  const n = p.int(2, 12);
  const templates = [
    () => `${a} went to the ${p.pick(PLACES)} in ${p.pick(CITIES)} on ${p.pick(DAYS)}.`,
    () => {
      const size = p.pick(SIZES);
      return `${a} gave ${b} ${article(size)} ${size} ${p.pick(COLORS)} ${obj}.`;
    },
    () => `${a} ${p.pick(VERBS_PAST)} ${n} ${plural(obj, n)} at the ${p.pick(PLACES)}.`,
    () => {
      const job = p.pick(JOBS);
      return `${a} is ${article(job)} ${job} who lives in ${p.pick(CITIES)}.`;
    },
    () => `${a} and ${b} played ${p.pick(SPORTS)} in the ${p.pick(PLACES)}.`,
    () => `In ${p.pick(MONTHS)}, ${a} moved from ${p.pick(CITIES)} to ${p.pick(CITIES)}.`,
    () => `${a} has a ${p.pick(COLORS)} ${p.pick(ANIMALS)} that likes ${p.pick(FOODS)}.`,
    () => `The ${obj} on the table is ${p.pick(COLORS)}.`,
    () => `${a} asked ${b} for the ${obj}, and ${b} said yes.`,
    () => `${a} ate ${p.pick(FOODS)} for lunch and ${p.pick(FOODS)} for dinner.`,
    () => `${a} paid ${p.int(1, 99)} dollars for ${article(obj)} ${obj}.`,
    () => `${a} was born in ${p.int(1950, 2020)} in ${p.pick(CITIES)}.`,
    () => `Every ${p.pick(DAYS)}, ${a} walks the ${p.pick(ANIMALS)} to the ${p.pick(PLACES)}.`,
    () => `${a} met ${b} at the ${p.pick(PLACES)}. ${b} gave ${a} ${article(obj)} ${obj}, and ${a} thanked ${b}.`,
    () => {
      const city = p.pick(CITIES);
      return `${a} lost the ${obj} in ${city}, and ${b} found the ${obj} in ${city} a day later.`;
    },
  ];
  const k = p.int(2, 5);
  return Array.from({ length: k }, () => p.pick(templates)()).join(' ');
}

function reviewDoc(p: Picker): string {
  const who = p.pick(NAMES);
  const place = p.pick(PLACES);
  const text = review(p, p.chance(0.5) ? 'positive' : 'negative');
  const frames = [
    () => `${who} visited ${article(place)} ${place} in ${p.pick(CITIES)} and wrote: ${text}`,
    () => `A note about the ${place} on ${p.pick(CITIES)} street. ${text}`,
    () => `${who} said about the ${place}: "${text}"`,
    () => `${text}`,
    () => `Feedback from ${who}, ${p.pick(MONTHS)} ${p.int(1, 28)}. ${text}`,
  ];
  return p.pick(frames)();
}

function recordDoc(p: Picker): string {
  const lines: string[] = [];
  const k = p.int(1, 4);
  const frames = [
    (r: string) => r,
    (r: string) => `Entry ${p.int(1, 500)} reads ${r}.`,
    (r: string) => `The form said ${r}.`,
    (r: string) => `- ${r}`,
    (r: string) => `The form said ${r}, and the copy also said ${r}.`,
    (r: string) => `Old entry: ${r}\nNew entry: ${r}`,
  ];
  for (let i = 0; i < k; i++) lines.push(p.pick(frames)(recordText(recordFields(p, p.int(2, 5)))));
  return lines.join('\n');
}

/** "the city is Oslo and the age is 34" */
function factsText(fields: readonly [string, string | number][]): string {
  return listPhrase(fields.map(([k, v]) => `the ${k} is ${v}`));
}

function jsonDoc(p: Picker): string {
  const fields = recordFields(p, p.int(1, 4));
  const j = jsonText(fields);
  const frames = [
    () => `${capitalize(factsText(fields))}, so the app stored ${j}.`,
    () => `The server sent back ${j}, which means ${factsText(fields)}.`,
    () => `The server sent back ${j}.`,
    () => `${j}`,
    () => `Saved object ${p.int(1, 99)}: ${j}`,
    () => `The app stored ${j} for ${p.pick(NAMES)}.`,
    () => `[${j}, ${jsonText(recordFields(p, p.int(1, 3)))}]`,
  ];
  return p.pick(frames)();
}

function arithmetic(p: Picker): string {
  const n = () => (p.chance(0.7) ? p.int(0, 20) : p.int(0, 60));
  const statements = [
    () => {
      const [a, b] = [n(), n()];
      return `${a} plus ${b} is ${a + b}.`;
    },
    () => {
      const [a, b, c] = [p.int(0, 12), p.int(0, 12), p.int(0, 12)];
      return `${a} plus ${b} plus ${c} is ${a + b + c}.`;
    },
    () => {
      const [a, b] = [n(), n()];
      return `The sum of ${a} and ${b} is ${a + b}.`;
    },
    () => {
      const [a, b, c] = [p.int(0, 12), p.int(0, 12), p.int(0, 12)];
      return `The sum of ${a}, ${b} and ${c} is ${a + b + c}.`;
    },
    () => {
      const [a, b] = [n(), n()];
      return `Adding ${a} to ${b} gives ${a + b}.`;
    },
    () => {
      const [a, b] = [n(), n()];
      const who = p.pick(NAMES);
      const obj = p.pick(OBJECTS);
      return `${who} had ${a} ${plural(obj, a)} and got ${b} more, so ${who} had ${a + b} ${plural(obj, a + b)}.`;
    },
    () => {
      const [a, b] = [n(), n()];
      const [hi, lo] = a >= b ? [a, b] : [b, a];
      return `${hi} minus ${lo} is ${hi - lo}.`;
    },
    () => {
      const [a, b] = [p.int(0, 12), p.int(0, 12)];
      return `${a} times ${b} is ${a * b}.`;
    },
    () => {
      const [a, b] = [n(), p.int(0, 20)];
      return `Adding to ${a}: ${Array.from({ length: 4 }, (_, i) => `${a} plus ${b + i} is ${a + b + i}`).join(', ')}.`;
    },
    () => {
      const x = p.int(-50, 50);
      return x === 0 ? '0 is neither positive nor negative.' : `${x} is a ${x > 0 ? 'positive' : 'negative'} number.`;
    },
    () => {
      const a = p.int(0, 90);
      const step = p.int(1, 5);
      return `Counting by ${step}: ${Array.from({ length: 6 }, (_, i) => a + i * step).join(', ')}.`;
    },
    () => {
      const [a, b] = [n(), n()];
      return `${a} is ${a > b ? 'more than' : a < b ? 'less than' : 'equal to'} ${b}.`;
    },
  ];
  const k = p.int(2, 6);
  return Array.from({ length: k }, () => p.pick(statements)()).join(' ');
}

function listDoc(p: Picker): string {
  const who = p.pick(NAMES);
  const frames = [
    () => `${who}'s shopping list: ${p.sample(FOODS, p.int(2, 5)).join(', ')}.`,
    () => `The ${p.pick(PLACES)} sells ${listPhrase(p.sample(OBJECTS, p.int(2, 4)).map((o) => plural(o)))}.`,
    () => {
      const colors = p.sample(COLORS, p.int(2, 5));
      return `Colors in the box: ${colors.join(', ')}. The first one is ${colors[0]} and the last one is ${colors[colors.length - 1]}.`;
    },
    () => `${who} has visited ${listPhrase(p.sample(CITIES, p.int(2, 4)))}.`,
    () =>
      `Things to pack:\n${p
        .sample(OBJECTS, p.int(2, 5))
        .map((o, i) => `${i + 1}. ${o}`)
        .join('\n')}`,
    () => `Team members: ${listPhrase(p.sample(NAMES, p.int(2, 5)))}.`,
    () => `The days ${who} works are ${listPhrase(p.sample(DAYS, p.int(2, 4)))}.`,
  ];
  const k = p.int(1, 3);
  return Array.from({ length: k }, () => p.pick(frames)()).join(p.chance(0.5) ? '\n' : ' ');
}

const WORD_POOLS: readonly (readonly string[])[] = [NAMES, CITIES, COLORS, FOODS, JOBS, ANIMALS, OBJECTS, DAYS, SPORTS];

/**
 * Words shown quoted and bare in one context. Byte-level BPE gives `"Alice"` and ` Alice` different
 * tokens; reading both forms side by side is how the model learns they spell the same word.
 */
function quotedDoc(p: Picker): string {
  const word = (): string => p.pick(p.pick<readonly string[]>(WORD_POOLS));
  const frames = [
    () => {
      const w = p.pick(NAMES);
      return `The label on the ${p.pick(OBJECTS)} says "${w}", so it belongs to ${w}.`;
    },
    () => {
      const w = word();
      return `${p.pick(NAMES)} wrote "${w}" on the board, and everyone read ${w}.`;
    },
    () => {
      const items = p.sample(p.pick<readonly string[]>([NAMES, CITIES, COLORS, FOODS]), 3);
      const k = p.int(0, 2);
      return `In the list [${items.map((x) => JSON.stringify(x)).join(', ')}], item ${k + 1} is ${items[k]}.`;
    },
    () => {
      const w = word();
      return `Say "${w}" twice: ${w}, ${w}.`;
    },
    () => {
      const c = p.pick(CITIES);
      return `The ticket shows "${c}" because the train goes to ${c}.`;
    },
  ];
  const k = p.int(1, 3);
  return Array.from({ length: k }, () => p.pick(frames)()).join(' ');
}

/**
 * A random sequence of words or numbers said twice. Nothing but the first mention predicts the
 * second, so these documents reward attending back and copying (what induction heads do), which
 * templated text alone rewards too little for a small model to learn it.
 */
function repeatDoc(p: Picker): string {
  const words = Array.from({ length: p.int(3, 6) }, () => p.pick(p.pick(WORD_POOLS)));
  const seq = words.join(', ');
  const nums = Array.from({ length: p.int(3, 6) }, () => p.int(0, 99)).join(', ');
  const frames = [
    () => `Roll call: ${seq}. Once more: ${seq}.`,
    () => `${p.pick(NAMES)} read out ${seq}, and ${p.pick(NAMES)} repeated ${seq}.`,
    () => `The code words are ${seq}. Again, the code words are ${seq}.`,
    () => `The numbers were ${nums}. Written again: ${nums}.`,
    () => `The note lists [${words.map((w) => JSON.stringify(w)).join(', ')}], that is ${listPhrase(words)}.`,
  ];
  return p.pick(frames)();
}

const KINDS: [number, (p: Picker) => string][] = [
  [0.16, story],
  [0.16, reviewDoc],
  [0.11, recordDoc],
  [0.12, jsonDoc],
  [0.08, quotedDoc],
  [0.08, repeatDoc],
  [0.22, arithmetic],
  [0.07, listDoc],
];

/** One document of the corpus. */
export function corpusDocument(p: Picker): string {
  let x = p.float();
  for (const [w, make] of KINDS) {
    if (x < w) return make(p);
    x -= w;
  }
  return KINDS[KINDS.length - 1]![1](p);
}
