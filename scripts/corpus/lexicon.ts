// The word lists the synthetic pretraining corpus and the downstream tasks draw from, and a seeded
// picker over them. One vocabulary for both, so the bundled model has read every word a task
// prompt can contain, while the tasks' prompt -> answer formats appear only in the task files.

import { Rng } from '../../src/train/rng.js';

export const NAMES = [
  'Alice',
  'Bob',
  'Carol',
  'David',
  'Emma',
  'Frank',
  'Grace',
  'Henry',
  'Irene',
  'Jack',
  'Kate',
  'Leo',
  'Mia',
  'Noah',
  'Olivia',
  'Paul',
  'Quinn',
  'Rosa',
  'Sam',
  'Tina',
  'Umar',
  'Vera',
  'Will',
  'Xena',
  'Yusuf',
  'Zoe',
  'Anna',
  'Ben',
  'Clara',
  'Dan',
  'Ella',
  'Fred',
  'Hugo',
  'Ivy',
  'James',
  'Lily',
  'Max',
  'Nina',
  'Oscar',
  'Ruby',
  'Tom',
  'Lucy',
] as const;

export const CITIES = [
  'Paris',
  'Rome',
  'Berlin',
  'Madrid',
  'Lisbon',
  'Vienna',
  'Prague',
  'Oslo',
  'Dublin',
  'Athens',
  'Cairo',
  'Tokyo',
  'Lima',
  'Boston',
  'Denver',
  'Sydney',
  'Toronto',
  'Nairobi',
  'Seoul',
  'Delhi',
  'Warsaw',
  'Zurich',
  'Milan',
  'Austin',
] as const;

export const PLACES = [
  'cafe',
  'restaurant',
  'hotel',
  'bakery',
  'museum',
  'market',
  'library',
  'park',
  'shop',
  'cinema',
  'gym',
  'station',
  'school',
  'garden',
  'bookstore',
  'pizzeria',
  'bar',
  'theater',
  'beach',
  'clinic',
] as const;

export const OBJECTS = [
  'apple',
  'book',
  'lamp',
  'chair',
  'table',
  'cup',
  'pen',
  'bag',
  'coat',
  'hat',
  'ball',
  'box',
  'clock',
  'key',
  'phone',
  'bottle',
  'plate',
  'shoe',
  'ticket',
  'card',
  'candle',
  'kite',
  'map',
  'mug',
  'pillow',
  'radio',
  'ring',
  'spoon',
  'towel',
  'watch',
  'bike',
  'camera',
  'guitar',
  'jacket',
  'basket',
  'brush',
  'blanket',
  'cookie',
  'orange',
  'banana',
  'egg',
  'carrot',
  'sandwich',
  'shirt',
  'scarf',
  'doll',
  'drum',
  'flower',
] as const;

/** Irregular plurals; the rest add "s" (or "es" after s, x, ch, sh). */
const PLURALS: Record<string, string> = { knife: 'knives', person: 'people', child: 'children', mouse: 'mice', man: 'men', woman: 'women' };

export function plural(word: string, n = 2): string {
  if (n === 1) return word;
  if (PLURALS[word]) return PLURALS[word]!;
  if (/(s|x|ch|sh)$/.test(word)) return `${word}es`;
  return `${word}s`;
}

export const COLORS = ['red', 'blue', 'green', 'yellow', 'black', 'white', 'brown', 'pink', 'purple', 'gray', 'orange', 'silver'] as const;
export const SIZES = ['small', 'big', 'tiny', 'large', 'long', 'short', 'heavy', 'light'] as const;
export const JOBS = [
  'teacher',
  'doctor',
  'baker',
  'pilot',
  'farmer',
  'nurse',
  'chef',
  'driver',
  'painter',
  'writer',
  'engineer',
  'singer',
  'lawyer',
  'student',
] as const;
export const ANIMALS = ['cat', 'dog', 'horse', 'rabbit', 'bird', 'fish', 'fox', 'cow', 'goat', 'duck', 'owl', 'bear'] as const;
export const FOODS = [
  'soup',
  'pasta',
  'bread',
  'cake',
  'coffee',
  'tea',
  'salad',
  'pizza',
  'rice',
  'fish',
  'pie',
  'juice',
  'cheese',
  'curry',
  'steak',
  'tart',
] as const;
export const DAYS = ['Monday', 'Tuesday', 'Wednesday', 'Thursday', 'Friday', 'Saturday', 'Sunday'] as const;
export const MONTHS = [
  'January',
  'February',
  'March',
  'April',
  'May',
  'June',
  'July',
  'August',
  'September',
  'October',
  'November',
  'December',
] as const;
export const VERBS_PAST = [
  'found',
  'bought',
  'sold',
  'lost',
  'painted',
  'borrowed',
  'washed',
  'fixed',
  'wrapped',
  'carried',
  'dropped',
  'hid',
] as const;
export const SPORTS = ['tennis', 'soccer', 'chess', 'golf', 'hockey', 'cricket', 'rugby', 'swimming'] as const;

/** What a review can praise or blame, with the adjectives that fit it. */
export const REVIEW_ASPECTS = [
  {
    noun: 'food',
    pos: ['delicious', 'fresh', 'tasty', 'excellent', 'wonderful', 'perfect'],
    neg: ['bland', 'cold', 'stale', 'awful', 'greasy', 'terrible'],
  },
  {
    noun: 'service',
    pos: ['quick', 'friendly', 'kind', 'excellent', 'helpful', 'great'],
    neg: ['slow', 'rude', 'careless', 'awful', 'terrible', 'poor'],
  },
  {
    noun: 'staff',
    pos: ['friendly', 'helpful', 'polite', 'kind', 'cheerful', 'lovely'],
    neg: ['rude', 'unhelpful', 'grumpy', 'careless', 'lazy', 'impolite'],
  },
  {
    noun: 'room',
    pos: ['clean', 'cozy', 'quiet', 'spacious', 'bright', 'comfortable'],
    neg: ['dirty', 'noisy', 'cramped', 'dark', 'smelly', 'tiny'],
  },
  {
    noun: 'price',
    pos: ['fair', 'low', 'reasonable', 'great', 'honest', 'fine'],
    neg: ['high', 'unfair', 'absurd', 'outrageous', 'steep', 'silly'],
  },
  {
    noun: 'music',
    pos: ['lovely', 'relaxing', 'beautiful', 'cheerful', 'soft', 'great'],
    neg: ['loud', 'annoying', 'harsh', 'awful', 'boring', 'terrible'],
  },
  {
    noun: 'coffee',
    pos: ['strong', 'rich', 'hot', 'smooth', 'excellent', 'perfect'],
    neg: ['weak', 'bitter', 'lukewarm', 'burnt', 'watery', 'awful'],
  },
  {
    noun: 'view',
    pos: ['stunning', 'beautiful', 'amazing', 'lovely', 'wonderful', 'great'],
    neg: ['ugly', 'dull', 'blocked', 'grim', 'boring', 'poor'],
  },
  {
    noun: 'wait',
    pos: ['short', 'brief', 'easy', 'fine', 'quick', 'pleasant'],
    neg: ['long', 'endless', 'painful', 'tiring', 'annoying', 'awful'],
  },
  {
    noun: 'seating',
    pos: ['comfortable', 'soft', 'clean', 'roomy', 'new', 'great'],
    neg: ['hard', 'broken', 'dirty', 'sticky', 'old', 'uncomfortable'],
  },
] as const;

export const REVIEW_OPENERS = {
  pos: [
    'I loved this place.',
    'What a great visit.',
    'We had a wonderful time.',
    'This was a real treat.',
    'I was very happy here.',
    'Everything went well.',
  ],
  neg: [
    'I hated this place.',
    'What a bad visit.',
    'We had a miserable time.',
    'This was a big letdown.',
    'I was very unhappy here.',
    'Nothing went well.',
  ],
} as const;

export const REVIEW_CLOSERS = {
  pos: [
    'I will come back soon.',
    'Highly recommended.',
    'Five stars from me.',
    'I would tell all my friends to go.',
    'We will return next week.',
    'Worth every penny.',
  ],
  neg: [
    'I will never come back.',
    'Avoid it.',
    'One star from me.',
    'I would tell my friends to stay away.',
    'We will not return.',
    'A waste of money.',
  ],
} as const;

/** Keys and value generators of the "key: value" records (and of the JSON the corpus also shows). */
export const RECORD_FIELDS = [
  'name',
  'city',
  'age',
  'job',
  'pet',
  'color',
  'food',
  'sport',
  'day',
  'score',
  'year',
  'item',
  'count',
] as const;
export type RecordField = (typeof RECORD_FIELDS)[number];

/** A seeded picker: every draw comes from one xoshiro stream, so a seed fixes the whole corpus. */
export class Picker {
  private readonly rng: Rng;
  constructor(seed: number, stream: number) {
    this.rng = Rng.fromSeed(seed, stream);
  }
  /** Uniform in [0, 1). */
  float(): number {
    return this.rng.nextFloat();
  }
  /** Uniform integer in [lo, hi]. */
  int(lo: number, hi: number): number {
    return lo + this.rng.nextInt(hi - lo + 1);
  }
  pick<T>(xs: readonly T[]): T {
    return xs[this.rng.nextInt(xs.length)]!;
  }
  chance(p: number): boolean {
    return this.rng.nextFloat() < p;
  }
  /** k distinct items in random order. */
  sample<T>(xs: readonly T[], k: number): T[] {
    const pool = [...xs];
    const out: T[] = [];
    for (let i = 0; i < k && pool.length > 0; i++) out.push(pool.splice(this.rng.nextInt(pool.length), 1)[0]!);
    return out;
  }
}

/** A value for a record field; numbers stay numbers so the JSON form can print them unquoted. */
export function fieldValue(p: Picker, field: RecordField): string | number {
  switch (field) {
    case 'name':
      return p.pick(NAMES);
    case 'city':
      return p.pick(CITIES);
    case 'age':
      return p.int(5, 90);
    case 'job':
      return p.pick(JOBS);
    case 'pet':
      return p.pick(ANIMALS);
    case 'color':
      return p.pick(COLORS);
    case 'food':
      return p.pick(FOODS);
    case 'sport':
      return p.pick(SPORTS);
    case 'day':
      return p.pick(DAYS);
    case 'score':
      return p.int(0, 100);
    case 'year':
      return p.int(1950, 2030);
    case 'item':
      return p.pick(OBJECTS);
    case 'count':
      return p.int(1, 60);
  }
}

/** "An" before a vowel sound (good enough for this vocabulary). */
export function article(word: string): string {
  return /^[aeiou]/i.test(word) ? 'an' : 'a';
}

export function capitalize(s: string): string {
  return s.charAt(0).toUpperCase() + s.slice(1);
}

/** "a, b and c" */
export function listPhrase(items: readonly string[]): string {
  if (items.length <= 1) return items.join('');
  return `${items.slice(0, -1).join(', ')} and ${items[items.length - 1]}`;
}
