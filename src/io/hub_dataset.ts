// `hf://datasets/OWNER/NAME[/path.jsonl][@revision]` (or huggingface_hub's fsspec form
// `hf://datasets/OWNER/NAME@revision/path.jsonl`): a jsonl file of a Hub dataset repo, fetched
// through the Hub client (repo type "dataset", the same cache, token, offline rules and checks as
// models) and returned as a local path. Without a path the repo's one jsonl file is used, or its one
// train*.jsonl (for evaluation: its one test/valid/eval*.jsonl).

import { path, readdir } from '../storage/index.js';
import { HubError, type HubOptions, isValidRepoId, snapshotDownload } from './hub.js';

const HUB_DATASET_PREFIX = 'hf://datasets/';

/** A dataset spec that names no repo, or a repo without a jsonl file to pick. */
export class HubDatasetError extends HubError {
  constructor(message: string) {
    super(message);
    this.name = 'HubDatasetError';
  }
}

export interface HubDatasetSpec {
  repoId: string;
  /** the file inside the repo; undefined: pick the repo's jsonl file */
  file?: string;
  revision?: string;
}

export function isHubDatasetSpec(s: string): boolean {
  return s.startsWith(HUB_DATASET_PREFIX);
}

/** Parses hf://datasets/OWNER/NAME[/path][@revision] and hf://datasets/OWNER/NAME@revision[/path]. */
export function parseHubDatasetSpec(spec: string): HubDatasetSpec {
  const usage = `write it as ${HUB_DATASET_PREFIX}OWNER/NAME[/file.jsonl][@revision]`;
  if (!isHubDatasetSpec(spec)) throw new HubDatasetError(`${JSON.stringify(spec)} is not a Hub dataset; ${usage}`);
  const m = /^([^/@]+)\/([^/@]+)(?:@([^/]+))?(?:\/(.*))?$/.exec(spec.slice(HUB_DATASET_PREFIX.length));
  if (!m) throw new HubDatasetError(`${JSON.stringify(spec)} names no dataset repo; ${usage}`);
  const repoId = `${m[1]}/${m[2]}`;
  if (!isValidRepoId(repoId))
    throw new HubDatasetError(
      `${JSON.stringify(repoId)} in ${spec} is not a valid Hub repo id (letters, digits, "-", "_", "."; no "--" or ".."); ${usage}`,
    );
  let revision: string | undefined = m[3];
  let file = m[4] === undefined || m[4] === '' ? undefined : m[4];
  if (revision === undefined && file !== undefined && file.includes('@')) {
    const at = file.lastIndexOf('@');
    revision = file.slice(at + 1);
    file = file.slice(0, at) || undefined;
  }
  if (revision !== undefined && revision === '') throw new HubDatasetError(`${spec} has an empty revision after "@"; ${usage}`);
  if (file !== undefined && (file.split('/').some((p) => p === '' || p === '.' || p === '..') || file.startsWith('/'))) {
    throw new HubDatasetError(`${spec}: the file ${JSON.stringify(file)} is not a relative path inside the repo; ${usage}`);
  }
  return { repoId, file, revision };
}

const TRAIN_RE = /(^|\/)train[^/]*\.jsonl$/i;
const EVAL_RE = /(^|\/)(test|valid|validation|eval|dev)[^/]*\.jsonl$/i;

/**
 * A local path for `--data`: the argument itself unless it is an hf://datasets/ spec, which is
 * downloaded (only the file it names, or the repo's jsonl files) into the Hub cache first.
 */
export async function resolveDataFile(spec: string, opts: HubOptions & { role?: 'train' | 'eval' } = {}): Promise<string> {
  if (!isHubDatasetSpec(spec)) return spec;
  const { role = 'train', ...hub } = opts;
  const d = parseHubDatasetSpec(spec);
  const snapshot = await snapshotDownload(d.repoId, {
    ...hub,
    repoType: 'dataset',
    revision: d.revision ?? hub.revision,
    allowPatterns: d.file ?? '*.jsonl',
  });
  const found = (await readdir(snapshot, { recursive: true }))
    .map((f) => f.split(path.sep).join('/'))
    .filter((f) => f.endsWith('.jsonl'))
    .sort();
  if (d.file !== undefined) {
    if (!found.includes(d.file))
      throw new HubDatasetError(
        `${spec}: the dataset repo ${d.repoId} has no file ${d.file}${found.length ? ` (its jsonl files: ${found.join(', ')})` : ''}; check the path`,
      );
    return path.join(snapshot, ...d.file.split('/'));
  }
  if (found.length === 0)
    throw new HubDatasetError(
      `${spec}: the dataset repo ${d.repoId} holds no .jsonl file; name a file of it, or convert the data to jsonl`,
    );
  if (found.length === 1) return path.join(snapshot, ...found[0]!.split('/'));
  const pick = found.filter((f) => (role === 'train' ? TRAIN_RE : EVAL_RE).test(f));
  if (pick.length === 1) return path.join(snapshot, ...pick[0]!.split('/'));
  throw new HubDatasetError(
    `${spec}: the dataset repo ${d.repoId} holds ${found.length} jsonl files (${found.join(', ')}); name one, e.g. ${HUB_DATASET_PREFIX}${d.repoId}/${found[0]}`,
  );
}
