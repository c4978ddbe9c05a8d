// Lint configuration: typescript-eslint's recommended rules over the TypeScript sources
// (`npm run lint`, run by .ci/run before the tests).
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
);
