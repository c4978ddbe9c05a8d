// Lint configuration: typescript-eslint's recommended rules over the TypeScript sources
// (`npm run lint`, run by .ci/run before the tests).
import { builtinModules } from 'node:module';
import js from '@eslint/js';
import tseslint from 'typescript-eslint';

export default tseslint.config(
  { ignores: ['dist/**', 'node_modules/**', 'test/fixtures/**', 'out/**', '**/*.js', '**/*.mjs'] },
  js.configs.recommended,
  ...tseslint.configs.recommended,
  {
    rules: {
      // A leading underscore marks a binding that is unused on purpose: a positional parameter a
      // callback must accept (`(_x, y, g) => ...`) or a key dropped by rest destructuring
      // (`const { bnb4: _kernel, ...attrs } = n.attrs`). Anything else unused is still an error.
      '@typescript-eslint/no-unused-vars': [
        'error',
        {
          argsIgnorePattern: '^_',
          varsIgnorePattern: '^_',
          caughtErrorsIgnorePattern: '^_',
          destructuredArrayIgnorePattern: '^_',
          ignoreRestSiblings: true,
        },
      ],
    },
  },
  {
    // Only src/runtime/ and src/storage/ may import Node's built-in modules: everything else reaches
    // files, paths and the process through them, so the library bundles for the browser
    // (test/e2e/node_imports.test.ts checks dynamic imports and the bundle's reach too).
    files: ['src/**/*.ts'],
    ignores: ['src/runtime/**', 'src/storage/**'],
    rules: {
      'no-restricted-imports': [
        'error',
        {
          paths: builtinModules.map((name) => ({
            name,
            message: 'Node built-ins are imported only in src/runtime/ and src/storage/; go through them.',
          })),
          patterns: [{ group: ['node:*'], message: 'Node built-ins are imported only in src/runtime/ and src/storage/; go through them.' }],
        },
      ],
    },
  },
);
