//go:build jepsenbug_ackearly

package wsfront

import "github.com/heraldhq/herald/fsm"

// A bug planted for the consistency harness (jepsen/, docs/jepsen.md) and
// built only with the tag jepsenbug_ackearly: the front acknowledges a
// publish it could not commit, as a front that answered before the commit
// would. The harness must report acknowledged messages as lost.
func init() {
	plantedAckEarly = func(r *fsm.Result, p *protoError) (*fsm.Result, *protoError) {
		if p != nil && (p.code == codeUnavailable || p.code == codeUnknownOutcome) {
			return &fsm.Result{}, nil
		}
		return r, p
	}
}
