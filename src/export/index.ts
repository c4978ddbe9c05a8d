// Exports for other runtimes: transformers.js (ONNX folder) and llama.cpp / Ollama (GGUF).

export { ExportError } from './errors.js';
export { loadExportSource, type ExportSource } from './source.js';
export { buildTransformersJsGraph, writeTransformersJs, TOKENIZER_FILES, type ExportedFile } from './transformersjs.js';
export { applyDtype, ONNX_DTYPES, ONNX_FILE_NAMES, type OnnxDtype } from './onnx_dtypes.js';
export { ggufModel, ggufLora, modelfile, GGUF_TYPES, type GgufType } from './gguf/model.js';
export { encodeGguf, GgmlType, ValueType, type GgufTensor, type MetaValue } from './gguf/writer.js';
