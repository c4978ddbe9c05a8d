// A small synthetic task for training tests: "a b ->" must continue " b a" (swap two words from a
// closed list). An untrained fixture model cannot predict it; held-out pairs test that it learned
// the rule and the word list, not the examples.

import { mkdtemp, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export const WORDS = ['apple', 'banana', 'cherry', 'grape', 'lemon', 'mango', 'peach', 'plum'];

/** All 64 ordered pairs as prompt/completion records, in a fixed shuffled order. */
export function swapRecords(): { prompt: string; completion: string }[] {
  const out: { prompt: string; completion: string }[] = [];
  for (let i = 0; i < 64; i++) {
    const k = (i * 37 + 11) % 64;
    const a = WORDS[k >> 3]!;
    const b = WORDS[k & 7]!;
    out.push({ prompt: `${a} ${b} ->`, completion: ` ${b} ${a}` });
  }
  return out;
}

export function jsonl(records: readonly unknown[]): string {
  return records.map((r) => JSON.stringify(r)).join('\n') + '\n';
}

export async function tempDir(prefix = 'peft-train-'): Promise<string> {
  return mkdtemp(join(tmpdir(), prefix));
}

/** Writes train.jsonl (48 pairs) and eval.jsonl (16 other pairs) into a new temp folder. */
export async function writeSwapTask(): Promise<{ dir: string; train: string; eval: string }> {
  const dir = await tempDir();
  const recs = swapRecords();
  const train = join(dir, 'train.jsonl');
  const ev = join(dir, 'eval.jsonl');
  await writeFile(train, jsonl(recs.slice(0, 48)));
  await writeFile(ev, jsonl(recs.slice(48)));
  return { dir, train, eval: ev };
}

/** Words every class uses: on their own they say nothing about the label. */
const FILLERS = ['the', 'model', 'key', 'token', 'block', 'test', 'weight', 'values'];

/**
 * A separable classification task for a sequence classifier: three filler words with "robot"
 * (label 0) or "book" (label 1) put at a varying place. Row 2m and 2m+1 share filler words m and
 * differ only in the keyword and label, so the fillers say nothing; rows from `offset` 64 on use
 * filler combinations the first 64 do not (a held-out set).
 */
export function classRecords(n: number, offset = 0): { text: string; label: number }[] {
  return Array.from({ length: n }, (_, i) => {
    const j = i + offset;
    const label = j % 2;
    const m = j >> 1;
    const words = [FILLERS[m % 8]!, FILLERS[(m >> 3) % 8]!, FILLERS[(m * 3 + 1) % 8]!];
    words.splice((m + (m >> 3)) % 4, 0, label ? 'book' : 'robot');
    return { text: words.join(' '), label };
  });
}

/** Writes train.jsonl (64 rows) and eval.jsonl (32 held-out rows) of classRecords into a new temp folder. */
export async function writeClassTask(): Promise<{ dir: string; train: string; eval: string }> {
  const dir = await tempDir('peft-seqcls-');
  const train = join(dir, 'train.jsonl');
  const ev = join(dir, 'eval.jsonl');
  await writeFile(train, jsonl(classRecords(64)));
  await writeFile(ev, jsonl(classRecords(32, 64)));
  return { dir, train, eval: ev };
}
