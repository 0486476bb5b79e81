// Package heraldjs holds herald.js, the JavaScript client of protocol
// herald.v1, and its type declarations, so that Go programs (a node's
// pages, say) can serve them without a copy that drifts.
package heraldjs

import _ "embed"

// Source is herald.js, an ES module.
//
//go:embed herald.js
var Source string

// Types is herald.d.ts, the module's TypeScript declarations.
//
//go:embed herald.d.ts
var Types string
