'use strict'

// ESLint flat config: neostandard (standard style) with TypeScript support,
// for lib/, test/, example-server/ and bench/ (.ts and .js files).
const neostandard = require('neostandard')

module.exports = [
  ...neostandard({
    ts: true,
    env: ['node'],
    ignores: [
      ...neostandard.resolveIgnoresFromGitignore(),
      '**/node_modules/**',
      'dist/**',
      '.tap/**',
      'coverage/**',
    ],
  }),
]
