//go:build jepsenbug_ackearly

package wsfront

import (
	"github.com/heraldhq/herald/fsm"
	"github.com/heraldhq/herald/protocol"
)

// A bug planted for the consistency harness (jepsen/, docs/jepsen.md) and
// built only with the tag jepsenbug_ackearly: the front acknowledges a
// publish it could not commit, as a front that answered before the commit
// would. The harness must report acknowledged messages as lost.
func init() {
	plantedAckEarly = func(r *fsm.Result, p *protocol.Error) (*fsm.Result, *protocol.Error) {
		if p != nil && (p.Code == protocol.CodeUnavailable || p.Code == protocol.CodeUnknownOutcome) {
			return &fsm.Result{}, nil
		}
		return r, p
	}
}
