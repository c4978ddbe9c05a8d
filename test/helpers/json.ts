// The one type for JSON documents a test reads or edits at arbitrary depth: a fixture's config, a
// fuzzed safetensors header, a chat record with a field broken on purpose. Untyped on purpose: the
// test states the shape it expects through its assertions, and typing every document would repeat
// (or, for broken inputs, contradict) the library's own types.

// eslint-disable-next-line @typescript-eslint/no-explicit-any -- deliberate, see above
export type LooseJson = any;
